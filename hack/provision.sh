#!/usr/bin/env bash
# Provisions the pinned kube-apiserver, kube-controller-manager, kubectl, etcd, helm,
# promtool and prometheus binaries, and dashboard-check (hack/dashboard-check: Grafana's dashboard
# schema from the Grafana Foundation SDK), built from source through the Go module proxy, into a
# cache outside the repo.
#
#   hack/provision.sh            # prints progress to stderr, the bin dir as last stdout line
#   export TOKEN_ROTATOR_K8S_BIN="$(hack/provision.sh | tail -n1)"
#
# Cache: ${TOKEN_ROTATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/token-rotator}/<version key>/bin
# The key names the Kubernetes, etcd and helm versions; promtool and the prometheus server
# (PROMETHEUS_VERSION) are not in it, so a new Prometheus is built into the same directory
# without rebuilding the control plane. dashboard-check is not in it either: it reports the SDK
# version and a digest of its source, and is rebuilt when either changes.
# A run whose binaries all exist and report the pinned versions returns in seconds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/versions.env
source "${here}/versions.env"

log() { printf 'provision: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "the go command is not on PATH (Go >= 1.26 is needed)"

# k8s.io/kubernetes vX.Y.Z publishes its staging modules as v0.Y.Z.
k8s_staging_version="v0.${K8S_VERSION#v1.}"
k8s_major="${K8S_VERSION#v}"; k8s_major="${k8s_major%%.*}"
k8s_minor="${K8S_VERSION#v*.}"; k8s_minor="${k8s_minor%%.*}"

# github.com/prometheus/prometheus v0.3XX.Y is Prometheus 3.XX.Y, the version promtool reports.
[[ "${PROMETHEUS_VERSION}" =~ ^v0\.3([0-9][0-9])\.([0-9]+)$ ]] ||
  die "PROMETHEUS_VERSION ${PROMETHEUS_VERSION} is not a Prometheus 3 module version (v0.3XX.Y)"
prometheus_release="3.$((10#${BASH_REMATCH[1]})).${BASH_REMATCH[2]}"

dashboard_check_src="${here}/dashboard-check/main.go"
[[ -f "${dashboard_check_src}" ]] || die "${dashboard_check_src} is missing"
dashboard_check_digest="$(sha256sum "${dashboard_check_src}" | cut -c1-16)"

cache_root="${TOKEN_ROTATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/token-rotator}"
dest="${cache_root}/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-helm-${HELM_VERSION}"
bin="${dest}/bin"

# Prints the version a binary reports, or nothing if it is missing or broken.
reported_version() {
  local name="$1" out=""
  [[ -x "${bin}/${name}" ]] || return 0
  case "${name}" in
    kube-apiserver | kube-controller-manager) out="$("${bin}/${name}" --version 2>/dev/null || true)" ;;
    kubectl) out="$("${bin}/${name}" version --client 2>/dev/null || true)" ;;
    etcd) out="$("${bin}/${name}" --version 2>/dev/null || true)" ;;
    helm) out="$("${bin}/${name}" version --template '{{.Version}}' 2>/dev/null || true)" ;;
    promtool | prometheus | dashboard-check) out="$("${bin}/${name}" --version 2>/dev/null || true)" ;;
  esac
  printf '%s' "${out}"
}

has_version() {
  local name="$1" want="$2"
  [[ "$(reported_version "${name}")" == *"${want}"* ]]
}

k8s_ok() {
  has_version kube-apiserver "Kubernetes ${K8S_VERSION}" &&
    has_version kube-controller-manager "Kubernetes ${K8S_VERSION}" &&
    has_version kubectl "Client Version: ${K8S_VERSION}"
}
etcd_ok() { has_version etcd "etcd Version: ${ETCD_VERSION#v}"; }
helm_ok() { has_version helm "${HELM_VERSION}"; }
promtool_ok() { has_version promtool "promtool, version ${prometheus_release} "; }
prometheus_ok() { has_version prometheus "prometheus, version ${prometheus_release} "; }
dashboard_check_ok() {
  has_version dashboard-check "grafana-foundation-sdk/go ${GRAFANA_SDK_VERSION} source ${dashboard_check_digest}"
}

if k8s_ok && etcd_ok && helm_ok && promtool_ok && prometheus_ok && dashboard_check_ok; then
  log "up to date: ${bin}"
  printf '%s\n' "${bin}"
  exit 0
fi

mkdir -p "${bin}"
# Serialise concurrent provisioning runs (parallel CI jobs, two shells) on the same cache.
exec 9>"${dest}/.lock"
flock 9

# Build settings: static binaries, no local paths in them, two compile jobs for two cores.
# GOWORK/GOFLAGS are pinned so a developer's environment cannot change the build.
export CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false
build_flags=(-p 2 -trimpath)
log "using $(go version)"

build_k8s() {
  local src="${dest}/src/kubernetes"
  mkdir -p "${src}"
  log "resolving k8s.io/kubernetes@${K8S_VERSION}"
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "${gomod}" ]] || die "could not download the go.mod of k8s.io/kubernetes@${K8S_VERSION}"

  # k8s.io/kubernetes points its staging modules at ./staging/...; those replaces do not apply
  # to a dependent module, so the wrapper replaces each one with its published tag.
  local replaces go_line
  replaces="$(awk -v ver="${k8s_staging_version}" \
    '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, ver }' "${gomod}")"
  [[ -n "${replaces}" ]] || die "found no staging replaces in ${gomod}"
  go_line="$(awk '$1 == "go" { print $2; exit }' "${gomod}")"

  cat >"${src}/go.mod" <<GOMOD
// Generated by hack/provision.sh: builds the Kubernetes control plane binaries.
module token-rotator.invalid/k8s-binaries

go ${go_line}

require k8s.io/kubernetes ${K8S_VERSION}

replace (
${replaces}
)
GOMOD
  cat >"${src}/tools.go" <<'GOSRC'
//go:build tools

// Package tools records the main packages this module builds, so go mod tidy keeps them.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GOSRC
  rm -f "${src}/go.sum"
  log "resolving the Kubernetes module graph (go mod tidy)"
  (cd "${src}" && go mod tidy >&2)

  local build_date ldflags=(-s -w) kv
  build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for kv in "gitVersion=${K8S_VERSION}" "gitMajor=${k8s_major}" "gitMinor=${k8s_minor}" \
    "gitTreeState=clean" "buildDate=${build_date}"; do
    ldflags+=("-X k8s.io/client-go/pkg/version.${kv}" "-X k8s.io/component-base/version.${kv}")
  done
  log "building kube-apiserver, kube-controller-manager and kubectl ${K8S_VERSION} (takes many minutes)"
  rm -rf "${dest}/out-k8s" && mkdir -p "${dest}/out-k8s"
  (cd "${src}" && go build "${build_flags[@]}" -ldflags "${ldflags[*]}" -o "${dest}/out-k8s/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl >&2)
  mv -f "${dest}/out-k8s/"* "${bin}/"
  rmdir "${dest}/out-k8s"
}

build_etcd() {
  local src="${dest}/src/etcd"
  mkdir -p "${src}"
  cat >"${src}/go.mod" <<GOMOD
// Generated by hack/provision.sh: builds the etcd server.
module token-rotator.invalid/etcd

go 1.26

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
GOMOD
  cat >"${src}/main.go" <<'GOSRC'
// Command etcd runs the etcd server, as etcd's own root module does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
GOSRC
  rm -f "${src}/go.sum"
  log "resolving go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
  (cd "${src}" && go mod tidy >&2)
  log "building etcd ${ETCD_VERSION}"
  (cd "${src}" && go build "${build_flags[@]}" -ldflags "-s -w" -o "${bin}/etcd.partial" . >&2)
  mv -f "${bin}/etcd.partial" "${bin}/etcd"
}

build_helm() {
  log "building helm ${HELM_VERSION}"
  # go install pkg@version builds in module mode without a wrapper; helm has no replaces.
  rm -rf "${dest}/out-helm" && mkdir -p "${dest}/out-helm"
  GOBIN="${dest}/out-helm" go install "${build_flags[@]}" \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2
  mv -f "${dest}/out-helm/helm" "${bin}/helm"
  rmdir "${dest}/out-helm"
}

build_promtool() {
  log "building promtool ${prometheus_release} (github.com/prometheus/prometheus ${PROMETHEUS_VERSION})"
  # Like helm: go install pkg@version, no wrapper module (prometheus' go.mod has no replaces).
  # The version is set explicitly: a module build has no VERSION file or release metadata.
  rm -rf "${dest}/out-promtool" && mkdir -p "${dest}/out-promtool"
  GOBIN="${dest}/out-promtool" go install "${build_flags[@]}" \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=${prometheus_release}" \
    "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}" >&2
  mv -f "${dest}/out-promtool/promtool" "${bin}/promtool"
  rmdir "${dest}/out-promtool"
}

build_prometheus() {
  log "building prometheus ${prometheus_release} (the server, for the alert e2e test)"
  # The same module and version as promtool, so its Go build cache is mostly warm. Built
  # without the web UI's assets (the builtinassets tag needs an npm build): the API is enough.
  rm -rf "${dest}/out-prometheus" && mkdir -p "${dest}/out-prometheus"
  GOBIN="${dest}/out-prometheus" go install "${build_flags[@]}" \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=${prometheus_release}" \
    "github.com/prometheus/prometheus/cmd/prometheus@${PROMETHEUS_VERSION}" >&2
  mv -f "${dest}/out-prometheus/prometheus" "${bin}/prometheus"
  rmdir "${dest}/out-prometheus"
}

build_dashboard_check() {
  log "building dashboard-check (github.com/grafana/grafana-foundation-sdk/go ${GRAFANA_SDK_VERSION})"
  # Like etcd: a generated module around the repo's main.go, so the SDK version has one pin.
  local src="${dest}/src/dashboard-check"
  rm -rf "${src}" && mkdir -p "${src}"
  cat >"${src}/go.mod" <<GOMOD
// Generated by hack/provision.sh: builds hack/dashboard-check.
module token-rotator.invalid/dashboard-check

go 1.26

require github.com/grafana/grafana-foundation-sdk/go ${GRAFANA_SDK_VERSION}
GOMOD
  cp "${dashboard_check_src}" "${src}/main.go"
  (cd "${src}" && go mod tidy >&2)
  (cd "${src}" && go build "${build_flags[@]}" \
    -ldflags "-s -w -X main.sdkVersion=${GRAFANA_SDK_VERSION} -X main.source=${dashboard_check_digest}" \
    -o "${bin}/dashboard-check.partial" . >&2)
  mv -f "${bin}/dashboard-check.partial" "${bin}/dashboard-check"
}

# Another run may have finished the work while this one waited for the lock.
etcd_ok || build_etcd
k8s_ok || build_k8s
helm_ok || build_helm
promtool_ok || build_promtool
prometheus_ok || build_prometheus
dashboard_check_ok || build_dashboard_check

k8s_ok || die "kube binaries in ${bin} do not report ${K8S_VERSION}: $(reported_version kube-apiserver)"
etcd_ok || die "etcd in ${bin} does not report ${ETCD_VERSION}: $(reported_version etcd)"
helm_ok || die "helm in ${bin} does not report ${HELM_VERSION}: $(reported_version helm)"
promtool_ok || die "promtool in ${bin} does not report ${prometheus_release}: $(reported_version promtool)"
prometheus_ok || die "prometheus in ${bin} does not report ${prometheus_release}: $(reported_version prometheus)"
dashboard_check_ok || die "dashboard-check in ${bin} does not report ${GRAFANA_SDK_VERSION} and source ${dashboard_check_digest}: $(reported_version dashboard-check)"
log "done: ${bin}"
printf '%s\n' "${bin}"
