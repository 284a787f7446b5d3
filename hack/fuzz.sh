#!/usr/bin/env bash
# Fuzzes the parsers that read what token endpoints and specs send: the token answer
# (body, status, headers), the lifetime clues, and target templates. Each target runs for
# FUZZ_SECONDS (default 300 by hand; hack/test.sh passes a short run for CI) with a 512 MiB
# memory limit, so an allocation without bound is a failure too.
# Installs what it needs: the nightly toolchain (cargo fuzz needs it) and cargo-fuzz.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${FUZZ_SECONDS:-300}"
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

for target in "${targets[@]}"; do
  echo "fuzz: ${target} for ${seconds}s" >&2
  mkdir -p "fuzz/corpus/${target}"
  cargo +nightly fuzz run "${target}" "fuzz/corpus/${target}" -- \
    -max_total_time="${seconds}" -rss_limit_mb=512 -max_len=65536 -timeout=10 \
    -print_final_stats=1 2>&1 | grep -E "^(#|Done|stat::number_of_executed_units|==|SUMMARY|ERROR|panicked)" | tail -n 5 >&2
  status="${PIPESTATUS[0]}"
  if [ "${status}" -ne 0 ]; then
    echo "fuzz: ${target} failed; the crashing input is under fuzz/artifacts/${target}/" >&2
    exit "${status}"
  fi
done
echo "fuzz: all targets ran clean" >&2
