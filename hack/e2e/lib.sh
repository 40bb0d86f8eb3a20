# Shared by the e2e build scripts (source it): one cache folder for Go modules and builds, and version ldflags.

CACHE=${AUDITCOV_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/auditcov-e2e}
export GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gobuild GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0

# version_ldflags vX.Y.Z: what /version and client user agents (e2e.test's included) report. The module zip
# carries no git commit, so gitCommit is left empty (client-go then says "unknown") rather than made up.
version_ldflags() {
  local version=$1 major minor pkg flags="-s -w"
  IFS=. read -r major minor _ <<<"${version#v}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean"
  done
  echo "$flags"
}

# go_mod_of MODULE@VERSION: the path of that release's go.mod (downloading the module).
go_mod_of() {
  go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])'
}

# timed NAME COMMAND...: run COMMAND (niced: the machine is shared), then print how long it took.
timed() {
  local name=$1 start=$SECONDS
  shift
  nice -n 10 "$@"
  echo "$name: built in $((SECONDS - start))s" >&2
}
