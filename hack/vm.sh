#!/usr/bin/env bash
# Runs commands (Go test binaries) inside a VM that boots Debian's stock kernel under qemu
# with software emulation (test/vm): the host kernel has no WireGuard module, the guest's
# has. The kernel package is downloaded once and cached by version (never installed),
# qemu-system-x86, xz-utils and kmod are installed with apt when missing (hack/deps.sh vm).
#
#   hack/vm.sh prepare              fetch what is missing, print the kernel's cache directory
#   hack/vm.sh run [flags] CMD...   each CMD a bash command line run in the guest, in order,
#                                   in the current directory; exits with the first failure
#                                   (flags: wgmesh-vm run --help)
#
# run --cluster starts a local cluster's network, control plane and operator here on the
# host (KUBEBUILDER_ASSETS, WGMESH_BIN_DIR as for make test) and puts the guest's NIC on its
# underlay: a cluster the commands start in the guest then runs only its nodes there
# (test/cluster/remote.go). --env KEY=VALUE adds to the commands' environment.
#
# WGMESH_VM_KERNEL=<version> (for example 6.1.0-56-amd64) pins the kernel; by default it is
# what Debian's linux-image-amd64 depends on now. WGMESH_VM_CPU=<qemu -cpu model> (default
# max): a model without AVX (Nehalem) moves bulk data about five times faster under
# emulation (Go's and the kernel's copies use AVX when present); the tests take as long.
set -euo pipefail

CACHE_ROOT="${WGMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wgmesh}"
VM_CACHE="${CACHE_ROOT}/vm"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { echo "vm: $*" >&2; }
die() { log "$*"; exit 1; }

[[ "$(id -u)" == 0 ]] || die "needs root (apt, and the guest's 9p share of / is read as root)"

apt_updated=
apt_update() {
  [[ -n "${apt_updated}" ]] && return
  log "apt-get update"
  apt-get update -qq >&2
  apt_updated=1
}

ensure_qemu() {
  "${REPO}/hack/deps.sh" install vm
  log "[1/3] qemu: $(qemu-system-x86_64 --version | head -1)"
}

kernel_version() {
  if [[ -n "${WGMESH_VM_KERNEL:-}" ]]; then
    echo "${WGMESH_VM_KERNEL}"
    return
  fi
  local pkg
  pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
  if [[ -z "${pkg}" ]]; then
    apt_update
    pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
  fi
  [[ -n "${pkg}" ]] || die "cannot resolve linux-image-amd64's kernel package (apt-cache depends linux-image-amd64)"
  echo "${pkg#linux-image-}"
}

# fetch_kernel <version> <dir>: the package unpacked into <dir>/root (modules indexed with
# depmod: the package ships no modules.dep) and <dir>/vmlinux, the uncompressed kernel
# (booted through its PVH entry: no firmware, no decompression).
fetch_kernel() {
  local version="$1" dir="$2"
  if [[ -f "${dir}/vmlinux" && -f "${dir}/root/lib/modules/${version}/modules.dep" ]]; then
    log "[2/3] kernel ${version}: cached in ${dir}"
    return
  fi
  local start=$SECONDS tmp
  mkdir -p "${VM_CACHE}"
  tmp="$(mktemp -d "${VM_CACHE}/.fetch.XXXXXX")"
  # Expanded now: tmp is local, and the trap runs after this function returned (set -u).
  trap "rm -rf '${tmp}'" EXIT
  log "[2/3] kernel ${version}: downloading linux-image-${version}"
  (cd "${tmp}" && apt-get download -o APT::Sandbox::User=root "linux-image-${version}" >&2) || {
    apt_update
    (cd "${tmp}" && apt-get download -o APT::Sandbox::User=root "linux-image-${version}" >&2)
  }
  log "[2/3] kernel ${version}: unpacking $(du -h "${tmp}"/*.deb | cut -f1) (dpkg-deb -x, depmod)"
  dpkg-deb -x "${tmp}"/linux-image-*.deb "${tmp}/root"
  # Hardware a guest without devices never loads: two thirds of the package.
  local m="${tmp}/root/lib/modules/${version}/kernel"
  rm -rf "${m}/sound" "${m}/drivers/"{gpu,media,scsi,usb,infiniband,iio,staging,hwmon,hid,platform,bluetooth,input,isdn,mtd,nfc,net/wireless,net/ethernet}
  depmod -b "${tmp}/root" "${version}"
  log "[2/3] kernel ${version}: extracting vmlinux from vmlinuz"
  local vmlinuz="${tmp}/root/boot/vmlinuz-${version}" off
  for off in $(LC_ALL=C grep -aboP '\xFD7zXZ\x00' "${vmlinuz}" | cut -d: -f1); do
    # xz stops reading after the one stream: tail's SIGPIPE is expected.
    (tail -c +$((off + 1)) "${vmlinuz}" || true) | xz -dc --single-stream >"${tmp}/vmlinux" 2>/dev/null || true
    if [[ "$(head -c 4 "${tmp}/vmlinux" | od -An -c | tr -d ' ')" == '177ELF' ]]; then
      break
    fi
    rm -f "${tmp}/vmlinux"
  done
  [[ -s "${tmp}/vmlinux" ]] || die "no xz-compressed ELF kernel found in ${vmlinuz}"
  rm -f "${tmp}"/*.deb
  rm -rf "${dir}"
  mv "${tmp}" "${dir}"
  trap - EXIT
  log "[2/3] kernel ${version}: ready in $((SECONDS - start))s ($(du -sh "${dir}" | cut -f1))"
}

# build_tool: wgmesh-vm (the runner) and wgmesh-vminit (the guest's /init, static: the
# initramfs has no loader); incremental, seconds when nothing changed.
build_tool() {
  local start=$SECONDS
  mkdir -p "${VM_CACHE}/bin"
  go -C "${REPO}" build -o "${VM_CACHE}/bin/" ./test/cmd/wgmesh-vm
  CGO_ENABLED=0 go -C "${REPO}" build -o "${VM_CACHE}/bin/" ./test/cmd/wgmesh-vminit
  log "[3/3] runner and guest init: ${VM_CACHE}/bin ($((SECONDS - start))s)"
}

cmd="${1:-}"
[[ "${cmd}" == prepare || "${cmd}" == run ]] || die "usage: hack/vm.sh prepare | run [flags] CMD..."
shift
ensure_qemu
version="$(kernel_version)"
kdir="${VM_CACHE}/${version}"
fetch_kernel "${version}" "${kdir}"
build_tool
if [[ "${cmd}" == prepare ]]; then
  echo "${kdir}"
  exit 0
fi
exec "${VM_CACHE}/bin/wgmesh-vm" run --kernel-dir "${kdir}" --kernel-version "${version}" "$@"
