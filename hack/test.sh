#!/usr/bin/env bash
# The project's test entry point (CI runs it through .ci/run): provisions the control plane
# binaries, then runs formatting, lints, every test including the e2e ones, and a short fuzz run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "provisioning kube-apiserver, etcd, kube-controller-manager and helm (hack/provision.sh)"
bin_dir="$(bash hack/provision.sh | tail -n 1)"
export TOKEN_ROTATOR_K8S_BIN="${bin_dir}"

step "generated files are up to date (crds/, chart CRD copy, deploy/, helm lint)"
HELM="${bin_dir}/helm" bash hack/check-generated.sh

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets --features e2e -- -D warnings"
cargo clippy --workspace --all-targets --features e2e -- -D warnings

step "cargo test --workspace --features e2e"
cargo test --workspace --features e2e

step "fuzzing each target briefly (hack/fuzz.sh; longer by hand with FUZZ_SECONDS)"
FUZZ_SECONDS="${FUZZ_SECONDS:-15}" FUZZ_BUILD_FLAGS="${FUZZ_BUILD_FLAGS:---dev -s none}" bash hack/fuzz.sh
