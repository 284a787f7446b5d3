#!/usr/bin/env bash
# The demo: a real control plane, the provider emulator, the operator, the four seed providers
# from examples/local/, and a live view of tokens rotating. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LIFETIME="${DEMO_TOKEN_LIFETIME:-60}"   # seconds; short so rotation is visible
NAMESPACE=demo
EMULATOR=127.0.0.1:8089
work="$(mktemp -d "${TMPDIR:-/tmp}/token-rotator-demo.XXXXXX")"
pids=()

step() { printf '\n==> %s\n' "$*" >&2; }
cleanup() {
  trap - EXIT INT TERM
  step "stopping (logs were in ${work})"
  for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "${work}"
}
trap cleanup EXIT INT TERM

wait_for() { # what, seconds, command...
  local what=$1 limit=$2; shift 2
  for ((i = 0; i < limit * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for ${what}; see the logs in ${work}" >&2
  exit 1
}

step "provisioning the control plane binaries (cached after the first run)"
bin="$(bash hack/provision.sh | tail -n 1)"
export TOKEN_ROTATOR_K8S_BIN="${bin}"
kubectl="${bin}/kubectl"

step "building token-rotator, provider-emulator and devcluster"
cargo build --bin token-rotator -p token-rotator -p provider-emulator -p testkit \
  --bin provider-emulator --bin devcluster

step "starting kube-apiserver, etcd and kube-controller-manager"
export KUBECONFIG="${work}/kubeconfig"
target/debug/devcluster --kubeconfig "${KUBECONFIG}" --crds crds >"${work}/devcluster.log" 2>&1 &
pids+=($!)
wait_for "the control plane" 180 test -s "${KUBECONFIG}"

step "starting the provider emulator on ${EMULATOR} (token lifetime ${LIFETIME}s)"
target/debug/provider-emulator --listen "${EMULATOR}" \
  --lifetime "rently=${LIFETIME}" --lifetime "carrental=${LIFETIME}" \
  --lifetime "retently=${LIFETIME}" --lifetime "reltio=${LIFETIME}" >"${work}/emulator.log" 2>&1 &
pids+=($!)
wait_for "the emulator" 30 curl -sf "http://${EMULATOR}/_emulator/rently/counters"
# Reltio hands out one token per user until it expires unless Multi Token Support is on.
curl -sf -X PUT "http://${EMULATOR}/_emulator/reltio/multi-token" \
  -H 'content-type: application/json' -d '{"enabled":true}' >/dev/null

step "creating namespace ${NAMESPACE} and the four seed providers from examples/local/"
"${kubectl}" create namespace "${NAMESPACE}" >/dev/null
code="$(curl -sf -X POST "http://${EMULATOR}/_emulator/retently/codes" \
  -H 'content-type: application/json' \
  -d '{"redirect_uri":"https://app.example.com/oauth/callback"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["code"])')"
for provider in rently carrental retently reltio; do
  sed "s/REPLACE-WITH-A-CODE-FROM-THE-EMULATOR/${code}/" "examples/local/${provider}/credentials.yaml" |
    "${kubectl}" -n "${NAMESPACE}" apply -f - >/dev/null
  # Renew at half the lifetime with a small margin, so the demo shows rotations quickly.
  sed 's/^  target:/  refresh:\n    renewBeforePercentage: 50\n    minimumMargin: 5s\n  target:/' \
    "examples/local/${provider}/providercredential.yaml" |
    "${kubectl}" -n "${NAMESPACE}" apply -f - >/dev/null
done

step "starting the operator (plain http allowed for the local emulator)"
target/debug/token-rotator run --allow-http --log-format text --metrics-addr 127.0.0.1:8080 \
  >"${work}/operator.log" 2>&1 &
pids+=($!)
wait_for "the operator" 30 curl -sf http://127.0.0.1:8080/readyz

step "live view: tokens rotating (Ctrl-C to stop). In another shell: export KUBECONFIG=${KUBECONFIG}"
while true; do
  clear 2>/dev/null || true
  date -u '+%H:%M:%S UTC'
  "${kubectl}" -n "${NAMESPACE}" get pcred -o wide
  echo
  "${kubectl}" -n "${NAMESPACE}" get pcred \
    -o custom-columns='NAME:.metadata.name,FINGERPRINT:.status.accessToken.fingerprint,NEXT REFRESH:.status.nextRefreshAt,REFRESH TOKEN ROTATIONS:.status.refreshToken.rotations'
  echo
  for p in rently carrental retently reltio; do
    printf '%-10s token requests: %s\n' "${p}" "$(curl -sf "http://${EMULATOR}/_emulator/${p}/counters" || echo '?')"
  done
  sleep 2
done
