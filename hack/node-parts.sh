#!/usr/bin/env bash
# Builds what real Kubernetes nodes run, from the Go module proxy and Debian, and
# caches it by version outside the repository (see README "Real nodes: the parts"):
#
#   kubelet, kube-scheduler, agnhost   k8s.io/kubernetes, pinned in hack/tools/go.mod
#   containerd, containerd-shim-runc-v2, ctr
#                                      github.com/containerd/containerd/v2, pinned in hack/containerd/go.mod
#   coredns                            github.com/coredns/coredns, pinned in hack/coredns/go.mod
#   pause                              gcc -static of build/pause/linux/pause.c of k8s.io/kubernetes
#   images/*.oci.tar                   OCI archives (hack/image) under the names the e2e suite
#                                      expects (test/utils/image/manifest.go of k8s.io/kubernetes):
#                                      pause, agnhost (current and previous), coredns, and
#                                      what selected conformance specs run besides agnhost:
#                                      glibc-dns-testing (DNS), busybox and
#                                      regression-issue-74839 (Conntrack)
#   parts.json                         the versions and image names above, for the tests and the cluster
#
# runc is Debian's package (apt-get install runc), not built here.
#
#   hack/node-parts.sh                 build what is missing, print the directory
#   hack/node-parts.sh --dir           print the directory only (no build)
#   hack/node-parts.sh --skip-agnhost  everything but the agnhost root filesystem and images
#                                      (the slowest part: debootstrap of a Debian root)
set -euo pipefail

LOG_NAME=node-parts
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONTAINERD_DIR="${HACK_DIR}/containerd"
COREDNS_DIR="${HACK_DIR}/coredns"
IMAGE_DIR="${HACK_DIR}/image"
KUBE_VERSION="$(module_version "${TOOLS_DIR}" k8s.io/kubernetes)"
CONTAINERD_VERSION="$(module_version "${CONTAINERD_DIR}" github.com/containerd/containerd/v2)"
COREDNS_VERSION="$(module_version "${COREDNS_DIR}" github.com/coredns/coredns)"
PARTS_DIR="${CACHE_ROOT}/node-parts/kubernetes-${KUBE_VERSION}-containerd-${CONTAINERD_VERSION}-coredns-${COREDNS_VERSION}"

# What agnhost's e2e usage runs inside its containers (upstream's Alpine image
# has the same tools): sh, curl, wget, nc (-u), ss, ip, dig, iperf, socat, ipcs.
ROOTFS_PACKAGES=(bind9-dnsutils curl iperf iproute2 iputils-ping netcat-openbsd procps socat wget)

skip_agnhost=false
case "${1:-}" in
  --dir) echo "${PARTS_DIR}"; exit 0 ;;
  --skip-agnhost) skip_agnhost=true ;;
  "") ;;
  *) die "unknown argument $1 (expected --dir or --skip-agnhost)" ;;
esac

if ! command -v runc >/dev/null; then
  die "runc is missing: real nodes use Debian's package (apt-get install runc)"
fi

# The image tag that the e2e suite's manifest gives the image config $1
# (configs[Agnhost] = Config{list.PromoterE2eRegistry, "agnhost", "2.66.1"}).
e2e_image_tag() {
  local tag
  tag="$(sed -n "s/^[[:space:]]*configs\[$1\] = Config{[^,]*, \"[^\"]*\", \"\([^\"]*\)\"}.*/\1/p" \
    "${KUBE_SRC}/test/utils/image/manifest.go")"
  [[ -n "${tag}" ]] || die "no tag for $1 in ${KUBE_SRC}/test/utils/image/manifest.go"
  echo "${tag}"
}

build_binaries() {
  local kube containerd
  kube="$(kube_ldflags "${KUBE_VERSION}")"
  containerd="-s -w -X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION}"
  go_build "${PARTS_DIR}/kubelet" "${TOOLS_DIR}" k8s.io/kubernetes/cmd/kubelet "${kube}" "[1/8]"
  go_build "${PARTS_DIR}/kube-scheduler" "${TOOLS_DIR}" k8s.io/kubernetes/cmd/kube-scheduler "${kube}" "[2/8]"
  go_build "${PARTS_DIR}/agnhost" "${TOOLS_DIR}" k8s.io/kubernetes/test/images/agnhost \
    "-s -w -X main.Version=${AGNHOST_VERSION}" "[3/8]"
  # Build tags as containerd's Makefile sets them (the shim without gRPC).
  go_build "${PARTS_DIR}/containerd" "${CONTAINERD_DIR}" github.com/containerd/containerd/v2/cmd/containerd \
    "${containerd}" "[4/8]" urfave_cli_no_docs
  go_build "${PARTS_DIR}/containerd-shim-runc-v2" "${CONTAINERD_DIR}" github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    "${containerd}" "[5/8]" urfave_cli_no_docs,no_grpc
  go_build "${PARTS_DIR}/ctr" "${CONTAINERD_DIR}" github.com/containerd/containerd/v2/cmd/ctr \
    "${containerd}" "[6/8]" urfave_cli_no_docs
  go_build "${PARTS_DIR}/coredns" "${COREDNS_DIR}" github.com/coredns/coredns "-s -w" "[7/8]"
  produce "${PARTS_DIR}/pause" "[8/8]" "compiling pause.c (gcc -static)" build_pause
  go_build "${PARTS_DIR}/regression-issue-74839" "${TOOLS_DIR}" k8s.io/kubernetes/test/images/regression-issue-74839 \
    "-s -w" "[conformance]"
}

# Debian's busybox-static with every applet linked in /bin (upstream's e2e busybox
# image is the Docker Hub busybox: specs run sh, sleep and nc in it).
busybox_root() {
  local dir="$1" deb applet
  mkdir -p "${dir}/bin" "${dir}/deb"
  (cd "${dir}/deb" && apt-get download busybox-static >/dev/null) || die "apt-get download busybox-static failed"
  deb="$(ls "${dir}"/deb/busybox-static_*.deb)"
  dpkg-deb -x "${deb}" "${dir}/deb/x"
  cp -p "${dir}/deb/x/bin/busybox" "${dir}/bin/busybox"
  rm -rf "${dir}/deb"
  for applet in $("${dir}/bin/busybox" --list); do
    [[ "${applet}" == busybox || -e "${dir}/bin/${applet}" ]] || ln -s busybox "${dir}/bin/${applet}"
  done
}

# pause as upstream builds it (build/pause/Makefile), stamped with the image tag.
build_pause() {
  gcc -Os -Wall -Werror -static -s -DVERSION="v${PAUSE_TAG}-${KUBE_VERSION}" \
    -o "${TMP_OUT}" "${KUBE_SRC}/build/pause/linux/pause.c"
}

# The agnhost root filesystem: a minimal Debian of the host's suite with the
# tools above, the user and group an e2e spec expects in the image, and
# upstream's /uploads and /agnhost-2 (a symlink to the agnhost binary the image
# adds). Keyed by suite and package list, not by Kubernetes version.
agnhost_rootfs() {
  command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
  local suite mirror key
  suite="$(. /etc/os-release && echo "${VERSION_CODENAME}")"
  mirror="${WGMESH_DEBIAN_MIRROR:-$(debian_mirror)}"
  key="$(echo "${ROOTFS_PACKAGES[*]} user-defined-in-image" | sha256sum | cut -c1-12)"
  ROOTFS="${CACHE_ROOT}/node-parts/agnhost-rootfs/debian-${suite}-${key}.tar"
  produce "${ROOTFS}" "[rootfs]" "debootstrap --variant=minbase ${suite} from ${mirror} (about 4 min)" \
    build_rootfs "${suite}" "${mirror}"
}

# The Debian mirror apt already uses (deb822 or one-line sources).
debian_mirror() {
  local m
  m="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's|^URIs:[[:space:]]*\([^[:space:]]*/debian\)/\{0,1\}$|\1|p' | head -1)"
  [[ -n "${m}" ]] || m="$(sed -n 's|^deb[[:space:]]\{1,\}\([^[:space:]]*/debian\)/\{0,1\}[[:space:]].*|\1|p' /etc/apt/sources.list 2>/dev/null | head -1)"
  echo "${m:-http://deb.debian.org/debian}"
}

build_rootfs() {
  local suite="$1" mirror="$2" root rc=0
  root="${TMP_OUT}.root"
  mkdir -p "${root}"
  # In a mount namespace of its own, so the /proc and /sys that debootstrap
  # mounts in the target go away with it, also when it fails.
  if ! unshare -m --propagation private debootstrap --variant=minbase \
      --include="$(IFS=,; echo "${ROOTFS_PACKAGES[*]}")" "${suite}" "${root}" "${mirror}" >"${root}.log" 2>&1; then
    tail -20 "${root}.log" >&2
    rc=1
  fi
  if [[ "${rc}" == 0 ]]; then
    chroot "${root}" groupadd -g 50000 group-defined-in-image &&
      chroot "${root}" useradd -u 1000 -U -M -G group-defined-in-image user-defined-in-image &&
      mkdir -p "${root}/uploads" && ln -s agnhost "${root}/agnhost-2" || rc=1
  fi
  if [[ "${rc}" == 0 ]]; then
    # Nothing of the build host or of apt's download state: the runtime
    # provides /dev, resolv.conf and the host name.
    rm -rf "${root}"/dev/* "${root}"/var/cache/apt/*.bin "${root}"/var/cache/apt/archives/*.deb \
      "${root}"/var/lib/apt/lists/* "${root}"/var/log/* "${root}"/tmp/* "${root}"/var/cache/ldconfig/aux-cache
    : >"${root}/etc/resolv.conf"
    : >"${root}/etc/hostname"
    tar -C "${root}" --sort=name --mtime=@0 --numeric-owner -cf "${TMP_OUT}" . || rc=1
  fi
  rm -rf --one-file-system "${root}" "${root}.log"
  return "${rc}"
}

# image <archive> <ref> <assembler args...>: an OCI archive of one linux/amd64
# image named ref. Rebuilt when its inputs (files, arguments, the assembler's
# source) change, which a key file beside the archive records. Paths under
# the temporary $WORK do not count.
image() {
  local out="$1" ref="$2"
  shift 2
  local key keyfile arg
  key="$(
    echo "${ref} ${*//${WORK}/}"
    for arg in "$@"; do
      [[ "${arg}" == all=* && -e "${arg#all=}" ]] || continue
      # A file, or what a directory holds (not the directory itself: $WORK is new every run).
      find "${arg#all=}" -mindepth "$([[ -d "${arg#all=}" ]] && echo 1 || echo 0)" -printf '%P %s %T@ %m %l\n' | sort
    done
    find "${IMAGE_DIR}" -maxdepth 1 \( -name 'go.*' -o -name '*.go' \) ! -name '*_test.go' | sort | xargs cat
  )"
  key="$(echo "${key}" | sha256sum | cut -c1-64)"
  keyfile="$(dirname "${out}")/.$(basename "${out}").key"
  if [[ -e "${out}" && "$(cat "${keyfile}" 2>/dev/null)" != "${key}" ]]; then
    log "$(basename "${out}"): inputs changed, rebuilding"
    rm -f "${out}"
  fi
  produce "${out}" "[image]" "assembling ${ref}" assemble --name "${ref}" --platform linux/amd64 --epoch 0 "$@"
  echo "${key}" >"${keyfile}"
}

# assemble <assembler args...>: runs hack/image, writing to produce's TMP_OUT.
assemble() {
  local digest
  if [[ ! -x "${ASSEMBLER}" ]]; then
    log "    building the assembler (hack/image)"
    CGO_ENABLED=0 go -C "${IMAGE_DIR}" build -o "${ASSEMBLER}" . || return 1
  fi
  digest="$("${ASSEMBLER}" "$@" --out "${TMP_OUT}" --print-digest)" || return 1
  log "    ${digest}"
}

build_images() {
  [[ -f "${IMAGE_DIR}/main.go" ]] || die "the image assembler ${IMAGE_DIR} is missing"
  local work
  work="$(mktemp -d "${CACHE_ROOT}/node-parts/.images.XXXXXX")"
  WORK="${work}"
  trap 'rm -rf "${WORK}"' EXIT
  ASSEMBLER="${work}/assembler" # built when an image needs it

  mkdir -p "${work}/pause" "${work}/coredns" "${work}/agnhost"
  cp -p "${PARTS_DIR}/pause" "${work}/pause/pause"
  cp -p "${PARTS_DIR}/coredns" "${work}/coredns/coredns"
  image "${PARTS_DIR}/images/pause.oci.tar" "registry.k8s.io/pause:${PAUSE_TAG}" \
    --dir "all=${work}/pause" --entrypoint '["/pause"]'
  image "${PARTS_DIR}/images/coredns.oci.tar" "registry.k8s.io/coredns/coredns:${COREDNS_VERSION}" \
    --dir "all=${work}/coredns" --entrypoint '["/coredns"]'
  if [[ "${skip_agnhost}" == true ]]; then
    log "[image] agnhost: skipped (--skip-agnhost)"
    return
  fi
  # As upstream's Dockerfile (test/images/agnhost/Dockerfile): /agnhost, CoreDNS
  # at /coredns (DNS specs run it from this image), porter's certificate, on
  # the root filesystem above. One binary serves both tags the suite uses.
  cp -p "${PARTS_DIR}/agnhost" "${PARTS_DIR}/coredns" "${work}/agnhost/"
  cp -p "${KUBE_SRC}/test/images/agnhost/porter/localhost.crt" "${KUBE_SRC}/test/images/agnhost/porter/localhost.key" "${work}/agnhost/"
  chmod 0644 "${work}/agnhost/localhost.crt" "${work}/agnhost/localhost.key"
  local tag
  for tag in "${AGNHOST_TAG}" "${AGNHOST_PREV_TAG}"; do
    image "${PARTS_DIR}/images/agnhost-${tag}.oci.tar" "registry.k8s.io/e2e-test-images/agnhost:${tag}" \
      --tar "all=${ROOTFS}" --dir "all=${work}/agnhost" \
      --entrypoint '["/agnhost"]' --cmd '["pause"]' \
      --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  done
  # The DNS specs' second querier, a glibc resolver with dig: the same Debian root.
  image "${PARTS_DIR}/images/glibc-dns-testing.oci.tar" "registry.k8s.io/e2e-test-images/glibc-dns-testing:${GLIBC_DNS_TAG}" \
    --tar "all=${ROOTFS}" --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  mkdir -p "${work}/busybox" "${work}/regression"
  busybox_root "${work}/busybox"
  image "${PARTS_DIR}/images/busybox.oci.tar" "registry.k8s.io/e2e-test-images/busybox:${BUSYBOX_TAG}" \
    --dir "all=${work}/busybox" --cmd '["sh"]' --env PATH=/bin
  cp -p "${PARTS_DIR}/regression-issue-74839" "${work}/regression/"
  image "${PARTS_DIR}/images/regression-issue-74839.oci.tar" "registry.k8s.io/e2e-test-images/regression-issue-74839:${REGRESSION_TAG}" \
    --dir "all=${work}/regression" --entrypoint '["/regression-issue-74839"]'
}

write_parts_json() {
  local tmp="${PARTS_DIR}/.parts.json.tmp.$$"
  cat >"${tmp}" <<EOF
{
  "kubernetes": "${KUBE_VERSION}",
  "containerd": "${CONTAINERD_VERSION}",
  "coredns": "${COREDNS_VERSION}",
  "agnhost": "${AGNHOST_VERSION}",
  "images": {
    "registry.k8s.io/pause:${PAUSE_TAG}": "images/pause.oci.tar",
    "registry.k8s.io/coredns/coredns:${COREDNS_VERSION}": "images/coredns.oci.tar"$(
  [[ "${skip_agnhost}" == true ]] || printf ',\n    "%s": "%s"' \
    "registry.k8s.io/e2e-test-images/agnhost:${AGNHOST_TAG}" "images/agnhost-${AGNHOST_TAG}.oci.tar" \
    "registry.k8s.io/e2e-test-images/agnhost:${AGNHOST_PREV_TAG}" "images/agnhost-${AGNHOST_PREV_TAG}.oci.tar" \
    "registry.k8s.io/e2e-test-images/glibc-dns-testing:${GLIBC_DNS_TAG}" "images/glibc-dns-testing.oci.tar" \
    "registry.k8s.io/e2e-test-images/busybox:${BUSYBOX_TAG}" "images/busybox.oci.tar" \
    "registry.k8s.io/e2e-test-images/regression-issue-74839:${REGRESSION_TAG}" "images/regression-issue-74839.oci.tar")
  }
}
EOF
  mv -f "${tmp}" "${PARTS_DIR}/parts.json"
}

total=$SECONDS
mkdir -p "${PARTS_DIR}/images"
(cd "${TOOLS_DIR}" && go mod download) >&2
(cd "${CONTAINERD_DIR}" && go mod download) >&2
(cd "${COREDNS_DIR}" && go mod download) >&2
KUBE_SRC="$(module_dir "${TOOLS_DIR}" k8s.io/kubernetes)"
AGNHOST_VERSION="$(cat "${KUBE_SRC}/test/images/agnhost/VERSION")"
AGNHOST_TAG="$(e2e_image_tag Agnhost)"
AGNHOST_PREV_TAG="$(e2e_image_tag AgnhostPrev)"
PAUSE_TAG="$(e2e_image_tag Pause)"
GLIBC_DNS_TAG="$(e2e_image_tag GlibcDnsTesting)"
BUSYBOX_TAG="$(e2e_image_tag BusyBox)"
REGRESSION_TAG="$(e2e_image_tag RegressionIssue74839)"

build_binaries
[[ "${skip_agnhost}" == true ]] || agnhost_rootfs
build_images
write_parts_json
log "all parts ready in ${PARTS_DIR} ($((SECONDS - total))s)"
echo "${PARTS_DIR}"
