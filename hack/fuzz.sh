#!/usr/bin/env bash
# Fuzzes the parsers that read what token endpoints and specs send: the token answer
# (body, status, headers), the lifetime clues, and target templates. Each target runs for
# FUZZ_SECONDS (default 300 by hand; hack/test.sh passes a short run for CI) with a 512 MiB
# memory limit, so an allocation without bound is a failure too.
# Installs what it needs: the nightly toolchain (cargo fuzz needs it) and cargo-fuzz.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${FUZZ_SECONDS:-300}"
# CI passes `--dev -s none` (an unoptimised build without AddressSanitizer: minutes less to
# build, still coverage-guided); by hand the default is optimised with AddressSanitizer.
read -r -a build_flags <<<"${FUZZ_BUILD_FLAGS:-}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(answer lifetime template)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain" >&2
  rustup toolchain install nightly --profile minimal >&2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked >&2
fi

log="$(mktemp)"
trap 'rm -f "${log}"' EXIT
for target in "${targets[@]}"; do
  echo "fuzz: ${target} for ${seconds}s" >&2
  mkdir -p "fuzz/corpus/${target}"
  if ! (cd fuzz && cargo +nightly fuzz run "${build_flags[@]}" "${target}" "corpus/${target}" -- \
    -max_total_time="${seconds}" -rss_limit_mb=512 -max_len=65536 -timeout=10 \
    -print_final_stats=1) >"${log}" 2>&1; then
    tail -n 40 "${log}" >&2
    echo "fuzz: ${target} failed; a crashing input is under fuzz/artifacts/${target}/" >&2
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units)" "${log}" >&2 || true
done
echo "fuzz: all targets ran clean" >&2
