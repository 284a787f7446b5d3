# Shared by hack/check-generated.sh and hack/render-deploy.sh (sourced; needs $root and log).
# find_helm prints the path of a helm binary of the pinned version: $HELM, the pinned helm from
# the provision cache or PATH, else hack/provision.sh builds it.
find_helm() {
  if [[ -n "${HELM:-}" ]]; then
    printf '%s\n' "${HELM}"
    return
  fi
  # shellcheck source=SCRIPTDIR/versions.env
  source "${root}/hack/versions.env"
  local cache_root candidate
  cache_root="${TOKEN_ROTATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/token-rotator}"
  for candidate in \
    "${TOKEN_ROTATOR_K8S_BIN:+${TOKEN_ROTATOR_K8S_BIN}/helm}" \
    "${cache_root}/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-helm-${HELM_VERSION}/bin/helm" \
    "$(command -v helm || true)"; do
    if [[ -n "${candidate}" && -x "${candidate}" ]] &&
      [[ "$("${candidate}" version --template '{{.Version}}' 2>/dev/null)" == "${HELM_VERSION}" ]]; then
      printf '%s\n' "${candidate}"
      return
    fi
  done
  log "helm ${HELM_VERSION} not found; building it with hack/provision.sh"
  printf '%s/helm\n' "$("${root}/hack/provision.sh" | tail -n1)"
}
