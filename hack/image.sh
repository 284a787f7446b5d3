#!/usr/bin/env bash
# Builds the operator image from the Dockerfile without a daemon (buildah, vfs storage, chroot
# isolation), on a base made from Debian's packages with mmdebstrap that stands in for
# distroless cc: glibc, libgcc, CA certificates, netbase and tzdata, no shell, no package
# manager, user 65532. Writes an OCI archive and prints its path as the last stdout line.
#
#   hack/image.sh                                # cargo build --release, then the image
#   hack/image.sh --binary target/debug/token-rotator --output target/image/dev.oci.tar
#
# The binary must link a glibc no newer than Debian 12's (build it on Debian 12 or older).
# Needs: buildah, mmdebstrap (apt-get install buildah mmdebstrap). The base (a rootfs tarball)
# is cached outside the repo like hack/provision.sh's binaries:
#   ${TOKEN_ROTATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/token-rotator}/image-base-<key>/
# and so is the image storage (<cache>/containers), kept apart from the machine's own.
# mmdebstrap reads the host's apt sources (IMAGE_APT_SOURCES overrides: a sources.list or
# deb822 file), so it fetches from wherever apt does.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

binary=""
output="target/image/token-rotator.oci.tar"
tag="localhost/token-rotator:dev"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    *) die "unknown argument $1 (--binary PATH, --output FILE, --tag NAME)" ;;
  esac
done

for tool in buildah mmdebstrap; do
  command -v "${tool}" >/dev/null || die "${tool} is not installed (apt-get install -y buildah mmdebstrap)"
done

# The base: Debian 12 like the Dockerfile's default runtime image. The key changes with the
# recipe, so a changed package list or pruning builds a new base.
suite=bookworm
packages=libc6,libgcc-s1,ca-certificates,netbase,tzdata
recipe_version=1
cache_root="${TOKEN_ROTATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/token-rotator}"
base_dir="${cache_root}/image-base-${suite}-r${recipe_version}"
base_tar="${base_dir}/rootfs.tar"
base_image="localhost/token-rotator-base:${suite}-r${recipe_version}"
storage=(--storage-driver vfs --root "${cache_root}/containers/storage" --runroot "${cache_root}/containers/run")

apt_sources="${IMAGE_APT_SOURCES:-}"
if [[ -z "${apt_sources}" ]]; then
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [[ -s "${f}" ]]; then apt_sources="${f}"; break; fi
  done
fi

build_base() {
  [[ -n "${apt_sources}" ]] || die "no apt sources found; set IMAGE_APT_SOURCES"
  mkdir -p "${base_dir}"
  log "building the base rootfs (${suite}: ${packages}) with mmdebstrap"
  # extract: the packages' files only, no maintainer scripts, so nothing runs inside.
  local r="${base_dir}/rootfs.partial"
  rm -rf "${r}"
  mmdebstrap --variant=extract --include="${packages}" --skip=output/dev \
    "${suite}" "${r}" "${apt_sources}" >&2
  # Then what distroless does by hand: the CA bundle from the Mozilla certificates (what
  # update-ca-certificates would write), the users, and no programs at all: the dependencies'
  # tools (openssl, debconf's perl scripts), documentation and package manager state go.
  mkdir -p "${r}/etc/ssl/certs"
  cat "${r}"/usr/share/ca-certificates/mozilla/*.crt >"${r}/etc/ssl/certs/ca-certificates.crt"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"${r}/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"${r}/etc/group"
  mkdir -p "${r}/home/nonroot" "${r}/root" "${r}/tmp"
  chown 65532:65532 "${r}/home/nonroot"
  chmod 1777 "${r}/tmp"
  chmod 0700 "${r}/root"
  rm -rf "${r}"/bin/* "${r}"/sbin/* "${r}"/usr/bin/* "${r}"/usr/sbin/* "${r}"/usr/lib/x86_64-linux-gnu/perl* \
    "${r}"/usr/share/perl5 "${r}"/usr/share/debconf "${r}"/usr/share/doc "${r}"/usr/share/man \
    "${r}"/usr/share/locale "${r}"/usr/share/lintian "${r}"/usr/share/info "${r}"/usr/lib/ssl/misc \
    "${r}"/etc/apt "${r}"/etc/dpkg "${r}"/etc/debconf.conf "${r}"/var/lib/apt "${r}"/var/lib/dpkg \
    "${r}"/var/cache/* "${r}"/var/log/* "${r}"/dev/* "${r}"/etc/hostname "${r}"/etc/resolv.conf "${r}"/etc/fstab
  # Fixed order and owners by number: the same packages give the same layer.
  tar --numeric-owner --sort=name -C "${r}" -cf "${base_dir}/rootfs.partial.tar" .
  rm -rf "${r}"
  mv -f "${base_dir}/rootfs.partial.tar" "${base_tar}"
}

[[ -f "${base_tar}" ]] || build_base

if ! buildah "${storage[@]}" inspect --type image "${base_image}" >/dev/null 2>&1; then
  log "importing the base as ${base_image}"
  ctr="$(buildah "${storage[@]}" from scratch)"
  buildah "${storage[@]}" add "${ctr}" "${base_tar}" / >/dev/null
  buildah "${storage[@]}" config --user 65532:65532 --workingdir / "${ctr}"
  buildah "${storage[@]}" commit --rm --quiet "${ctr}" "${base_image}" >/dev/null
fi

if [[ -z "${binary}" ]]; then
  log "cargo build --release --locked --bin token-rotator"
  cargo build --release --locked --bin token-rotator >&2
  binary="target/release/token-rotator"
fi
[[ -x "${binary}" ]] || die "${binary} is not an executable"

# The build context holds the binary alone: the repo (target/ included) is not read.
context="$(mktemp -d)"
trap 'rm -rf "${context}"' EXIT
cp "${binary}" "${context}/token-rotator"

log "building ${tag} (Dockerfile target prebuilt on ${base_image})"
# The builder stage is not needed by the prebuilt target and is skipped; its base is pointed
# at the local one anyway, so nothing is ever pulled.
buildah "${storage[@]}" build --isolation chroot --pull=never --layers=false \
  --target prebuilt \
  --build-arg RUNTIME_IMAGE="${base_image}" \
  --build-arg BUILDER_IMAGE="${base_image}" \
  --build-arg BINARY=token-rotator \
  -f Dockerfile -t "${tag}" "${context}" >&2

mkdir -p "$(dirname "${output}")"
rm -f "${output}"
buildah "${storage[@]}" push --quiet "${tag}" "oci-archive:${output}:${tag#localhost/}" >&2
# Only the archive is kept: the storage would otherwise grow by an image per build.
buildah "${storage[@]}" rmi "${tag}" >/dev/null

size="$(du -m "${output}" | cut -f1)"
base_size="$(du -m "${base_tar}" | cut -f1)"
log "wrote ${output}: ${size} MiB (base rootfs ${base_size} MiB, binary $(($(stat -c %s "${binary}") / 1048576)) MiB)"
printf '%s\n' "$(cd "$(dirname "${output}")" && pwd)/$(basename "${output}")"
