#!/usr/bin/env bash
# Runs the scale benchmark's cold start through another build of this project (a git ref) and
# through the working tree, in one run, and prints the ratios:
#   bash hack/bench-compare.sh <ref> [BENCH_* variables as for `cargo bench --bench scale`]
# The ref is built in its own worktree and target directory under target/bench-compare/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ref="${1:?usage: hack/bench-compare.sh <git ref>}"
base="${PWD}/target/bench-compare"
tree="${base}/tree"
mkdir -p "${base}"
rm -rf "${tree}"
git worktree prune
git worktree add --detach --force "${tree}" "${ref}" >&2
trap 'git worktree remove --force "${tree}" >/dev/null 2>&1 || true' EXIT
echo "building ${ref} ($(git rev-parse --short "${ref}")) in ${tree}" >&2
# Same features as the benchmark's own binary.
CARGO_TARGET_DIR="${base}/target" cargo build --release --features e2e --bin token-rotator \
  --manifest-path "${tree}/Cargo.toml" >&2
cp "${base}/target/release/token-rotator" "${base}/token-rotator-${ref//\//-}"
if [ -z "${TOKEN_ROTATOR_K8S_BIN:-}" ]; then
  TOKEN_ROTATOR_K8S_BIN="$(bash hack/provision.sh | tail -n 1)"
  export TOKEN_ROTATOR_K8S_BIN
fi
BENCH_COMPARE_BIN="${base}/token-rotator-${ref//\//-}" cargo bench --features e2e --bench scale
