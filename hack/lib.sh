# Sourced (not run) by the hack/ build scripts: where the cache lives, the
# version stamp of Kubernetes binaries, and build steps that print progress
# every 30s and move only finished files into the cache.
#
# The sourcing script sets LOG_NAME, the prefix of its lines on stderr.

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_DIR="${HACK_DIR}/tools"
CACHE_ROOT="${WGMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wgmesh}"

log() { echo "${LOG_NAME}: $*" >&2; }
die() { log "$*"; exit 1; }

# module_version <module dir> <module path>: the version that dir's go.mod pins.
module_version() {
  local v
  v="$(go -C "$1" list -m -f '{{.Version}}' "$2")" || true
  [[ -n "${v}" ]] || die "cannot read the pinned version of $2 from $1/go.mod"
  echo "${v}"
}

# module_dir <module dir> <module path>: where that module's source is in the
# module cache (downloaded first).
module_dir() {
  local d
  go -C "$1" mod download "$2" >&2
  d="$(go -C "$1" list -m -f '{{.Dir}}' "$2")" || true
  [[ -n "${d}" ]] || die "cannot find the source of $2 for $1/go.mod"
  echo "${d}"
}

# kube_ldflags <version>: the -ldflags that stamp a Kubernetes binary with its
# release version, as the upstream release build does.
kube_ldflags() {
  local version="$1"
  local v="${version#v}"
  local major="${v%%.*}" rest="${v#*.}"
  local minor="${rest%%.*}"
  local pkg
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${version}"
    flags+=" -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
    flags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  done
  echo "${flags}"
}

# with_progress <what> <command...>: runs the command, logging "still <what>"
# every 30s; returns its status.
with_progress() {
  local what="$1"
  shift
  local start=$SECONDS rc=0 ticker
  ( while sleep 30 && kill -0 $$ 2>/dev/null; do log "    ... still ${what} ($((SECONDS - start))s)"; done ) &
  ticker=$!
  "$@" || rc=$?
  kill "${ticker}" 2>/dev/null || true
  wait "${ticker}" 2>/dev/null || true
  return "${rc}"
}

# produce <dest> <step> <what> <command...>: unless dest exists, runs the
# command with "$TMP_OUT" (a temporary path beside dest) as where it writes,
# then moves that into place, so dest only ever holds a finished file. Logs the
# time a cold build took.
produce() {
  local dest="$1" step="$2" what="$3"
  shift 3
  local name
  name="$(basename "${dest}")"
  if [[ -e "${dest}" ]]; then
    log "${step:+${step} }${name}: cached"
    return
  fi
  mkdir -p "$(dirname "${dest}")"
  log "${step:+${step} }${name}: ${what} (progress every 30s)"
  local start=$SECONDS
  TMP_OUT="$(dirname "${dest}")/.${name}.tmp.$$"
  rm -rf "${TMP_OUT}"
  if ! with_progress "${what%% *} ${name}" "$@"; then
    rm -rf "${TMP_OUT}"
    die "${name}: failed"
  fi
  mv -f "${TMP_OUT}" "${dest}"
  log "${step:+${step} }${name}: done in $((SECONDS - start))s"
}

# go_build <dest> <module dir> <package> <ldflags> [step] [build tags]: a
# static binary (CGO_ENABLED=0, -trimpath) built in that module, cached at dest.
go_build() {
  local dest="$1" dir="$2" pkg="$3" ldflags="$4" step="${5:-}" tags="${6:-}"
  produce "${dest}" "${step}" "building ${pkg}" _go_build "${dir}" "${pkg}" "${ldflags}" "${tags}"
}
_go_build() { CGO_ENABLED=0 go -C "$1" build -trimpath -tags "$4" -ldflags "$3" -o "${TMP_OUT}" "$2"; }
