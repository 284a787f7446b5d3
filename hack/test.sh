#!/usr/bin/env bash
# The project's test entry point (CI runs it through .ci/run): provisions the control plane
# binaries and the container tools, then runs formatting, lints, every test including the e2e
# ones (e2e_image builds and runs the image: hack/image.sh), and a short fuzz run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "provisioning kube-apiserver, etcd, kube-controller-manager, helm, promtool, prometheus and dashboard-check (hack/provision.sh)"
bin_dir="$(bash hack/provision.sh | tail -n 1)"
export TOKEN_ROTATOR_K8S_BIN="${bin_dir}"

step "container tools for the image test (buildah, podman, runc, mmdebstrap: hack/image.sh, e2e_image)"
image_tools=(buildah podman runc mmdebstrap)
missing=()
for tool in "${image_tools[@]}"; do command -v "${tool}" >/dev/null || missing+=("${tool}"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  [[ "$(id -u)" == 0 ]] || { echo "install ${missing[*]} (apt-get install -y ${image_tools[*]})" >&2; exit 1; }
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${image_tools[@]}" >&2
fi

step "generated files are up to date (crds/, chart CRD copy, deploy/, helm lint)"
HELM="${bin_dir}/helm" bash hack/check-generated.sh

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets --features e2e -- -D warnings"
cargo clippy --workspace --all-targets --features e2e -- -D warnings

step "cargo test --workspace --features e2e (the apiserver's audit log on, for the RBAC check)"
audit_dir="target/e2e-audit"
rm -rf "${audit_dir}"
TESTKIT_AUDIT_DIR="${PWD}/${audit_dir}" cargo test --workspace --features e2e

step "the chart grants exactly the API access the operator used during the e2e suite (rbac-audit)"
rules="${audit_dir}/chart-rbac.yaml"
"${bin_dir}/helm" template token-rotator charts/token-rotator \
  --set leaderElection.enabled=true --set rolloutRestarts.enabled=true --set crossNamespaceDelivery.enabled=true \
  --show-only templates/rbac.yaml >"${rules}"
# OwnerReferencesPermissionEnforcement checks the finalizers grant itself when an owned Secret
# is created (no request of the operator's shows it); e2e_controller's
# without_the_finalizers_permission_no_owned_secret_can_be_created proves it is needed.
cargo run --quiet -p testkit --bin rbac-audit -- --audit-dir "${audit_dir}" --rules "${rules}" \
  --checked-by-admission "update tokenrotator.dev/providercredentials/finalizers"

step "fuzzing each target briefly (hack/fuzz.sh; longer by hand with FUZZ_SECONDS)"
FUZZ_SECONDS="${FUZZ_SECONDS:-15}" FUZZ_BUILD_FLAGS="${FUZZ_BUILD_FLAGS:---dev -s none}" bash hack/fuzz.sh
