#!/usr/bin/env bash
# The one list of the Debian packages the make targets need, and their installer. A fresh
# machine has Go, gcc, git and apt; everything else a target runs comes from here. The
# targets call it themselves (make demo, test, test-kernel, bench, conformance), and so does
# .ci/run through make test: no other list exists. test/deps fails when a test or a hack/
# script runs a command that no list provides.
#
#   hack/deps.sh install TARGET...  install what TARGET lacks (apt-get, as root); says nothing
#                                   when everything is present; not root: lists what is
#                                   missing and fails
#   hack/deps.sh missing TARGET...  print the missing packages, one a line
#   hack/deps.sh list TARGET...     print the command:package entries, one a line
#
# TARGET is a make target (demo, test, test-kernel, bench, conformance) or a group below.
# An entry is command:package (the command is what is checked: present means on PATH) or
# :package for a package without a command (a library), checked with dpkg-query.
set -euo pipefail

# Debian's required packages: on every Debian root (debootstrap --variant=minbase), so
# never installed here; listed so the guard knows where a script's commands come from.
GROUP_base=(
  bash:bash sh:dash
  cat:coreutils cp:coreutils mv:coreutils rm:coreutils ln:coreutils mkdir:coreutils
  chmod:coreutils touch:coreutils ls:coreutils head:coreutils tail:coreutils cut:coreutils
  tr:coreutils sort:coreutils uniq:coreutils wc:coreutils od:coreutils du:coreutils
  id:coreutils env:coreutils sleep:coreutils mktemp:coreutils basename:coreutils
  dirname:coreutils readlink:coreutils realpath:coreutils sha256sum:coreutils
  timeout:coreutils date:coreutils chroot:coreutils test:coreutils stat:coreutils install:coreutils true:coreutils
  false:coreutils echo:coreutils printf:coreutils tee:coreutils yes:coreutils
  grep:grep sed:sed awk:mawk find:findutils xargs:findutils tar:tar gzip:gzip
  mount:mount umount:mount nsenter:util-linux unshare:util-linux flock:util-linux
  kill:procps dpkg-deb:dpkg dpkg-query:dpkg apt-get:apt apt-cache:apt hostname:hostname
)
# What the fresh machine already has (and the product's build needs).
GROUP_toolchain=(go:golang git:git gcc:gcc make:make :libc6-dev :ca-certificates)
# The local cluster and the agent on it: links, routes, nftables, captures, modules, sysctls.
GROUP_cluster=(
  ip:iproute2 nft:nftables tcpdump:tcpdump modprobe:kmod sysctl:procps ps:procps
  # hostPort pods (the portmap plugin's default backend) and kube-proxy's iptables mode
  # (make conformance-reference) run the host's iptables.
  iptables:iptables
)
# Real nodes: runc for containerd; debootstrap for the node images' Debian root.
GROUP_realnodes=(runc:runc debootstrap:debootstrap)
# What tests and benchmarks drive traffic and peers with.
GROUP_probes=(
  ping:iputils-ping iperf3:iperf3
  # TestExternalPeer's laptop: wg-quick on userspace WireGuard.
  wg:wireguard-tools wg-quick:wireguard-tools wireguard-go:wireguard-go
  # kubectl wgmesh graph's SVG.
  dot:graphviz
)
# The kernel WireGuard VMs (hack/vm.sh): qemu, and the kernel package unpacked and indexed.
GROUP_vm=(qemu-system-x86_64:qemu-system-x86 xz:xz-utils depmod:kmod)

# Targets: the groups each make target needs.
TARGET_demo=(base toolchain cluster realnodes)
TARGET_test=(base toolchain cluster realnodes probes vm)
TARGET_test_kernel=(base toolchain cluster probes vm)
TARGET_bench=(base toolchain cluster probes)
TARGET_conformance=(base toolchain cluster realnodes)

log() { echo "deps: $*" >&2; }
die() { log "$*"; exit 2; }

# entries <name>...: the command:package entries of targets or groups, deduplicated.
entries() {
  local name var
  for name in "$@"; do
    var="TARGET_${name//-/_}[@]"
    if declare -p "TARGET_${name//-/_}" >/dev/null 2>&1; then
      entries "${!var}"
      continue
    fi
    var="GROUP_${name//-/_}[@]"
    declare -p "GROUP_${name//-/_}" >/dev/null 2>&1 || die "unknown target or group ${name} (targets: demo test test-kernel bench conformance)"
    printf '%s\n' "${!var}"
  done | awk '!seen[$0]++'
}

# missing <name>...: the packages with an entry that is not satisfied, once each.
missing() {
  local e cmd pkg
  entries "$@" | while IFS= read -r e; do
    cmd="${e%%:*}" pkg="${e#*:}"
    if [[ -n "${cmd}" ]]; then
      command -v "${cmd}" >/dev/null 2>&1 || echo "${pkg}"
    else
      [[ "$(dpkg-query -W -f '${Status}' "${pkg}" 2>/dev/null)" == *" installed" ]] || echo "${pkg}"
    fi
  done | awk '!seen[$0]++'
}

install() {
  local pkgs
  mapfile -t pkgs < <(missing "$@")
  [[ ${#pkgs[@]} -gt 0 ]] || return 0
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    die "make $* needs these Debian packages: ${pkgs[*]} (as root: hack/deps.sh install $*)"
  fi
  local start=$SECONDS
  log "installing ${pkgs[*]} (apt-get, for $*)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; then
    # A fresh machine may have no package lists yet, or stale ones.
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
  mapfile -t pkgs < <(missing "$@")
  [[ ${#pkgs[@]} -eq 0 ]] || die "still missing after apt-get install: ${pkgs[*]}"
  log "installed in $((SECONDS - start))s"
}

cmd="${1:-}"
[[ $# -ge 2 ]] || die "usage: hack/deps.sh install|missing|list TARGET..."
shift
case "${cmd}" in
  install) install "$@" ;;
  missing) missing "$@" ;;
  list) entries "$@" ;;
  *) die "usage: hack/deps.sh install|missing|list TARGET..." ;;
esac
