#!/usr/bin/env bash
# Copies the generated CRDs (crds/*.yaml, from `token-rotator crd`) into the Helm chart:
#   crds/providercredentials.yaml -> charts/token-rotator/files/crd.yaml
#   crds/tokendeliverygrants.yaml -> charts/token-rotator/files/crd-tokendeliverygrants.yaml
# which templates/crd*.yaml embed with .Files.Get (adding labels and the
# helm.sh/resource-policy annotation).
#
#   hack/sync-chart-crd.sh           # update the chart's copy
#   hack/sync-chart-crd.sh --check   # exit 1 if the chart's copy is stale
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pairs=(
  "crds/providercredentials.yaml charts/token-rotator/files/crd.yaml"
  "crds/tokendeliverygrants.yaml charts/token-rotator/files/crd-tokendeliverygrants.yaml"
)

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  -h | --help) sed -n '2,10p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

cd "${root}"
stale=0
for pair in "${pairs[@]}"; do
  read -r src dst <<<"${pair}"
  [[ -f "${src}" ]] || { echo "sync-chart-crd: ${src} is missing" >&2; exit 1; }
  if "${check}"; then
    if ! cmp -s "${src}" "${dst}"; then
      echo "sync-chart-crd: ${dst} differs from ${src}; run hack/sync-chart-crd.sh" >&2
      diff -u "${dst}" "${src}" | head -n 40 >&2 || true
      stale=1
    else
      echo "sync-chart-crd: ${dst} is up to date"
    fi
  else
    mkdir -p "$(dirname "${dst}")"
    cp "${src}" "${dst}"
    echo "sync-chart-crd: wrote ${dst}"
  fi
done
exit "${stale}"
