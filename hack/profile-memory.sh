#!/usr/bin/env bash
# Where the operator's memory goes: N ProviderCredentials (each with its own credentials
# Secret) on a local control plane and the provider emulator, the operator (a release build
# with line tables) run under heaptrack until all are Ready, then a summary of what is live.
#   N=1000 bash hack/profile-memory.sh        (needs heaptrack: apt-get install heaptrack)
# Everything listens on loopback only. Output: target/prof/work/ (heap.zst, logs) and the
# summary on stdout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n="${N:-1000}"
emulator="${EMULATOR:-127.0.0.1:18080}"
metrics="${METRICS:-127.0.0.1:18081}"
command -v heaptrack >/dev/null || { echo "heaptrack is not installed (apt-get install heaptrack)" >&2; exit 2; }
bin_dir="${TOKEN_ROTATOR_K8S_BIN:-$(bash hack/provision.sh | tail -n 1)}"
kubectl="${bin_dir}/kubectl"
# heaptrack follows malloc: the build uses the system allocator instead of jemalloc (the sizes
# of what is live are the same; the RSS is not the shipped build's).
echo "building (release with line tables and the system allocator, in target/prof)" >&2
CARGO_TARGET_DIR=target/prof CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  CARGO_PROFILE_RELEASE_STRIP=none cargo build --release --features system-allocator \
  --bin token-rotator >&2
cargo build -p provider-emulator --bin provider-emulator -p testkit --bin devcluster >&2
work="${PWD}/target/prof/work"
rm -rf "${work}" && mkdir -p "${work}"
export KUBECONFIG="${work}/kubeconfig"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
target/debug/devcluster --kubeconfig "${KUBECONFIG}" --crds crds >"${work}/devcluster.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 180); do test -s "${KUBECONFIG}" && break; sleep 1; done
target/debug/provider-emulator --listen "${emulator}" >"${work}/emulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 30); do curl -sf "http://${emulator}/_emulator/rently/counters" >/dev/null && break; sleep 1; done
"${kubectl}" create namespace bench >/dev/null
python3 - "${n}" "${emulator}" >"${work}/objects.yaml" <<'PY'
import base64, sys
n, emulator = int(sys.argv[1]), sys.argv[2]
b64 = lambda s: base64.b64encode(s.encode()).decode()
for i in range(n):
    print(f"""---
apiVersion: v1
kind: Secret
metadata: {{name: creds-{i}, namespace: bench, labels: {{tokenrotator.dev/credentials: "true"}}}}
data: {{client_id: {b64('rently-user')}, client_secret: {b64('rently-pass')}}}
---
apiVersion: tokenrotator.dev/v1alpha1
kind: ProviderCredential
metadata: {{name: pc-{i}, namespace: bench}}
spec:
  preset: rently
  tokenEndpoint: {{url: "http://{emulator}/rently/auth/token"}}
  credentials: {{secretRef: {{name: creds-{i}}}}}
  target: {{secretName: token-{i}}}""")
PY
"${kubectl}" apply --server-side -f "${work}/objects.yaml" >/dev/null
echo "created ${n} ProviderCredentials; starting the operator under heaptrack" >&2
heaptrack -o "${work}/heap" target/prof/release/token-rotator run --namespace bench --allow-http \
  --metrics-addr "${metrics}" --log-format json >"${work}/operator.log" 2>&1 &
pids+=($!)
ready=0
for _ in $(seq 1 600); do
  ready="$("${kubectl}" get providercredentials -n bench -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
print(sum(any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions", [])) for p in items))')"
  [ "${ready}" -ge "${n}" ] && break
  sleep 1
done
echo "${ready} of ${n} Ready; settling 10 s" >&2
sleep 10
operator="$(pgrep -f "target/prof/release/token-rotator run" | tail -n 1)"
grep VmRSS "/proc/${operator}/status" || true
# SIGKILL: nothing is freed, so heaptrack's "leaked" is exactly what the running operator held.
kill -KILL "${operator}"
for _ in $(seq 1 60); do pgrep -f heaptrack_interpret >/dev/null || break; sleep 1; done
heaptrack_print -f "${work}"/heap*.zst --print-peaks 0 --print-allocators 0 \
  --print-temporary 0 --print-leaks 1 --peak-limit 30 --sub-peak-limit 4 2>/dev/null |
  tee "${work}/live.txt" | grep -E "leaked over|^  [^ ]" | head -200
heaptrack_print -f "${work}"/heap*.zst 2>/dev/null | tail -n 6
