#!/usr/bin/env bash
# Builds the wgmesh image without Docker: one image holding wgmesh-operator,
# wgmesh-agent and the CNI plugins the agent installs, for linux/amd64 and
# linux/arm64, as an OCI archive assembled by hack/image.
#
#   hack/image.sh [<out dir>]   default bin/image; writes <out dir>/wgmesh-<tag>.oci.tar
#   hack/image.sh --path        print bin/image/wgmesh-<tag>.oci.tar (no build)
#
# stdout: "image: <name>", "archive: <path>", "digest: <index digest>";
# progress on stderr.
#
# The name is the chart's default: values.yaml image.repository and, as the
# chart's empty image.tag means, Chart.yaml appVersion (IMAGE_REPOSITORY and
# IMAGE_TAG override them). The same commit gives the same digest: static
# binaries built with -trimpath and fixed flags, every timestamp the last
# commit's time (SOURCE_DATE_EPOCH), and a byte-reproducible assembler.
#
# Inside the image (what the chart runs and the agent reads):
#   /usr/local/bin/wgmesh-agent, /usr/local/bin/wgmesh-operator   command: [wgmesh-agent] etc., on PATH
#   /usr/libexec/wgmesh/cni/{wgmesh-guard,bridge,host-local,portmap,loopback}   the agent's --cni-bin-source
#   /etc/passwd, /etc/group (root, nonroot 65532), /etc/nsswitch.conf, /tmp (1777)
# and nothing else: no shell, no package manager.
set -euo pipefail

GO="${GO:-go}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-${root}/bin/image}"
platforms=(linux/amd64 linux/arm64)
path_env="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

log() { echo "image: $*" >&2; }
die() { log "$*"; exit 1; }

# The chart's defaults name the image: keep `make image` and `helm install` in step.
chart="${root}/charts/wgmesh"
repository="${IMAGE_REPOSITORY:-$(sed -n '/^image:/,/^[^ #]/s/^  repository:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "${chart}/values.yaml")}"
tag="${IMAGE_TAG:-$(sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"[:space:]]*\)"\{0,1\}[[:space:]]*$/\1/p' "${chart}/Chart.yaml")}"
[[ -n "${repository}" ]] || die "no image.repository in ${chart}/values.yaml"
[[ -n "${tag}" ]] || die "no appVersion in ${chart}/Chart.yaml"
name="${repository}:${tag}"

# Every timestamp in the image: the last commit's time.
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
  SOURCE_DATE_EPOCH="$(git -C "${root}" log -1 --format=%ct 2>/dev/null || echo 0)"
fi
export SOURCE_DATE_EPOCH
revision="$(git -C "${root}" rev-parse HEAD 2>/dev/null || echo unknown)"

if [[ "${out}" == "--path" ]]; then # where the archive goes by default, without building
  echo "${root}/bin/image/wgmesh-${tag}.oci.tar"
  exit 0
fi
mkdir -p "${out}"
out="$(cd "${out}" && pwd)"
archive="${out}/wgmesh-${tag}.oci.tar"
stage="$(mktemp -d "${out}/.stage.XXXXXX")"
trap 'rm -rf "${stage}"' EXIT

# No version variable in cmd/ to stamp; -s -w drop the symbol table and DWARF
# (stack traces keep function names).
ldflags="-s -w"
dirs=()
for platform in "${platforms[@]}"; do
  arch="${platform#linux/}"
  fs="${stage}/${arch}"
  log "building ${platform}: wgmesh-operator, wgmesh-agent, CNI plugins"
  mkdir -p "${fs}/usr/local/bin" "${fs}/usr/libexec/wgmesh/cni" "${fs}/etc" "${fs}/tmp" "${fs}/root" "${fs}/home/nonroot"
  CGO_ENABLED=0 GOOS=linux GOARCH="${arch}" \
    "${GO}" -C "${root}" build -trimpath -buildvcs=false -ldflags "${ldflags}" \
    -o "${fs}/usr/local/bin/" ./cmd/wgmesh-operator ./cmd/wgmesh-agent
  CGO_ENABLED=0 GOOS=linux GOARCH="${arch}" LDFLAGS="${ldflags}" GO="${GO}" \
    "${root}/hack/cni-plugins.sh" "${fs}/usr/libexec/wgmesh/cni"
  # What static Go binaries look up: user and group names (the operator runs
  # as 65532), and the order of hosts before DNS for the Go resolver.
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"${fs}/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"${fs}/etc/group"
  printf '%s\n' 'hosts: files dns' >"${fs}/etc/nsswitch.conf"
  # Modes do not depend on the umask.
  find "${fs}" -type d -exec chmod 0755 {} +
  find "${fs}" -type f -exec chmod 0644 {} +
  chmod 0755 "${fs}"/usr/local/bin/* "${fs}"/usr/libexec/wgmesh/cni/*
  chmod 0700 "${fs}/root"
  chmod 1777 "${fs}/tmp"
  dirs+=(--dir "${platform}=${fs}")
done

log "assembling ${name}"
args=(--name "${name}")
for platform in "${platforms[@]}"; do args+=(--platform "${platform}"); done
digest="$("${GO}" -C "${root}/hack/image" run . "${args[@]}" "${dirs[@]}" \
  --env "${path_env}" --cmd '["wgmesh-agent"]' --workdir / \
  --label "org.opencontainers.image.title=wgmesh" \
  --label "org.opencontainers.image.source=https://github.com/wgmesh/wgmesh" \
  --label "org.opencontainers.image.version=${tag}" \
  --label "org.opencontainers.image.revision=${revision}" \
  --out "${archive}" --print-digest)"

echo "image: ${name}"
echo "archive: ${archive}"
echo "digest: ${digest}"
