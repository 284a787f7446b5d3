#!/usr/bin/env bash
# Fails when a generated file is out of date with its source:
#   crds/<plural>.yaml                     <- `token-rotator crd --only <plural>` (the Rust CRD types)
#   charts/token-rotator/files/crd*.yaml   <- crds/*.yaml (hack/sync-chart-crd.sh)
#   deploy/*.yaml                          <- the Helm chart (hack/render-deploy.sh)
# and checks the chart: helm lint --strict (default values, a namespaced, multi-replica
# configuration with the ServiceMonitor, alerts and dashboard, and a sharded one), the CRDs the chart renders equal crds/*.yaml apart from
# labels and annotations, and the chart's appVersion equals the crate version.
#
#   hack/check-generated.sh            # check; exit 1 and say how to regenerate
#   hack/check-generated.sh --update   # regenerate everything, then check
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chart="charts/token-rotator"

update=false
case "${1:-}" in
  "") ;;
  --update) update=true ;;
  -h | --help) sed -n '2,12p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

log() { printf 'check-generated: %s\n' "$*" >&2; }

# shellcheck source=SCRIPTDIR/find-helm.sh
source "${root}/hack/find-helm.sh"

cd "${root}"
HELM="$(find_helm)"
export HELM

if "${update}"; then
  for plural in providercredentials tokendeliverygrants; do
    log "regenerating crds/${plural}.yaml"
    tmp="$(mktemp)"
    cargo run -q --bin token-rotator -- crd --only "${plural}" >"${tmp}"
    mv "${tmp}" "crds/${plural}.yaml"
  done
  hack/sync-chart-crd.sh
  hack/render-deploy.sh
fi

failed=()

# 1. The committed CRDs match the Rust types, one file each, and together are `token-rotator crd`.
crd_now="$(mktemp)"
trap 'rm -f "${crd_now}"' EXIT
for plural in providercredentials tokendeliverygrants; do
  if ! cargo run -q --bin token-rotator -- crd --only "${plural}" >"${crd_now}"; then
    log "FAIL: cargo run --bin token-rotator -- crd --only ${plural} did not run"
    failed+=("crd")
  elif ! diff -u "crds/${plural}.yaml" "${crd_now}" >&2; then
    log "FAIL: crds/${plural}.yaml is stale (the diff above is what the code generates)"
    failed+=("crd")
  else
    log "ok: crds/${plural}.yaml matches token-rotator crd --only ${plural}"
  fi
done
if cargo run -q --bin token-rotator -- crd >"${crd_now}" && cat crds/*.yaml | diff -q - "${crd_now}" >/dev/null; then
  log "ok: crds/*.yaml together are token-rotator crd"
else
  log "FAIL: crds/ holds files token-rotator crd does not print"
  failed+=("crd")
fi

# 2. The chart's copy of the CRD.
if hack/sync-chart-crd.sh --check; then
  log "ok: chart CRD copy"
else
  log "FAIL: ${chart}/files/crd.yaml is stale"
  failed+=("chart-crd")
fi

# 3. deploy/ rendered from the chart.
if hack/render-deploy.sh --check; then
  log "ok: deploy/"
else
  log "FAIL: deploy/ is stale"
  failed+=("deploy")
fi

# 4. helm lint, default values, a namespaced HA configuration with every monitoring object
#    (ServiceMonitor, PrometheusRule, dashboard ConfigMap) and two shards (one with two
#    replicas and its own resources).
if "${HELM}" lint --strict "${chart}" >/dev/null &&
  "${HELM}" lint --strict "${chart}" --namespace ops \
    --set 'watchNamespaces={team-a,team-b}' --set replicaCount=2 \
    --set 'allowedTokenHosts={auth.example.com}' --set serviceMonitor.enabled=true \
    --set prometheusRule.enabled=true --set grafanaDashboard.enabled=true >/dev/null &&
  "${HELM}" lint --strict "${chart}" --namespace ops \
    --set 'shards[0].name=a' --set 'shards[0].selector=shard=a' \
    --set 'shards[1].name=b' --set 'shards[1].selector=shard in (b\,c)' \
    --set 'shards[1].replicaCount=2' --set 'shards[1].resources.limits.memory=320Mi' \
    --set serviceMonitor.enabled=true >/dev/null; then
  log "ok: helm lint --strict"
else
  "${HELM}" lint --strict "${chart}" >&2 || true
  log "FAIL: helm lint --strict ${chart}"
  failed+=("lint")
fi

# 5. The CRDs the chart renders are the generated ones, apart from labels and annotations.
if python3 -c 'import yaml' 2>/dev/null; then
  for pair in "crd.yaml providercredentials" "crd-tokendeliverygrants.yaml tokendeliverygrants"; do
    read -r template plural <<<"${pair}"
    if "${HELM}" template token-rotator "${chart}" --show-only "templates/${template}" |
      PLURAL="${plural}" python3 -c '
import os, sys, yaml
rendered = yaml.safe_load(sys.stdin)
with open("crds/%s.yaml" % os.environ["PLURAL"]) as f:
    generated = yaml.safe_load(f)
for meta in (rendered["metadata"], generated["metadata"]):
    meta.pop("labels", None)
    meta.pop("annotations", None)
sys.exit(0 if rendered == generated else 1)
'; then
      log "ok: the chart renders crds/${plural}.yaml"
    else
      log "FAIL: the CRD rendered by ${chart}/templates/${template} differs from crds/${plural}.yaml"
      failed+=("chart-crd-render")
    fi
  done
else
  log "SKIPPED: rendered-CRD comparison (python3 with PyYAML is not available)"
fi

# 6. The chart's appVersion is the crate version (the image tag defaults to it).
crate_version="$(sed -n '/^\[package\]/,/^\[/{s/^version = "\(.*\)"$/\1/p}' Cargo.toml | head -n1)"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "${chart}/Chart.yaml")"
if [[ -n "${crate_version}" && "${crate_version}" == "${app_version}" ]]; then
  log "ok: ${chart} appVersion ${app_version} = crate version"
else
  log "FAIL: ${chart}/Chart.yaml appVersion '${app_version}' != Cargo.toml version '${crate_version}'"
  failed+=("app-version")
fi

if ((${#failed[@]})); then
  log "failed: ${failed[*]}"
  log "to regenerate: hack/check-generated.sh --update"
  log "  (= cargo run -q --bin token-rotator -- crd --only <plural> > crds/<plural>.yaml;"
  log "     hack/sync-chart-crd.sh; hack/render-deploy.sh), then commit the changes;"
  log "  an appVersion or lint failure needs an edit of ${chart}"
  exit 1
fi
log "all generated files are up to date"
