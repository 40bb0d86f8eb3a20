#!/usr/bin/env bash
# Build a Kubernetes 1.18 kube-apiserver, the last release line with dynamic audit (AuditSink objects,
# auditregistration.k8s.io/v1alpha1), for tests/e2e/test_dynamic_audit.py.
#
#   hack/e2e/build-1.18.sh      # prints the directory holding kube-apiserver as its last line
#
# Three things keep `go build` from working on the published module as it is; each is handled here:
# - v1.18.19, not v1.18.20: the module proxy serves k8s.io/kubernetes v1.18.20 but not the v0.18.20 staging
#   modules it needs ("not available"); v0.18.19 is served.
# - vbom.ml/util (required by k8s.io/kubectl 0.18) is not served either: its vanity host is gone. The same code
#   lives on as github.com/fvbommel/util at the same commit, so the wrapper module replaces one with the other.
# - pkg/generated/openapi/zz_generated.openapi.go is produced by `make` and is not in the module zip, so
#   cmd/kube-apiserver fails with "undefined: generatedopenapi.GetOpenAPIDefinitions". It is generated here
#   with the release's own openapi-gen (k8s.io/kube-openapi at the version 1.18 pins) over the packages that
#   carry a `+k8s:openapi-gen=` tag, as build/root/Makefile.generated_files does, into a writable copy of the
#   module that the wrapper module then uses.
# And one thing keeps the built binary from working: github.com/modern-go/reflect2 v1.0.1 (pinned by 1.18) lays
# out Go's map iterator as Go 1.17 did, so json-iterator crashes (nil pointer in runtime maps.(*Iter).Next) on
# the first custom resource it encodes. reflect2 v1.0.2 with json-iterator v1.1.12 is the upstream fix.
set -euo pipefail

KUBE_VERSION=v1.18.19
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
BIN=$CACHE/bin/$KUBE_VERSION
SRC=$CACHE/src/kubernetes-$KUBE_VERSION
WRAPPER=$CACHE/src/wrapper-$KUBE_VERSION
STAGING_VERSION=v0.18.19

if [[ -x $BIN/kube-apiserver ]]; then
  echo "kube-apiserver $KUBE_VERSION: cached" >&2
  echo "$BIN"
  exit 0
fi
mkdir -p "$BIN" "$CACHE/src"

kube_gomod=$(go_mod_of "k8s.io/kubernetes@$KUBE_VERSION")
python3 "$HERE/gen_gomod.py" kube "$kube_gomod" "$KUBE_VERSION" "$WRAPPER"
module_dir=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
if [[ ! -d $SRC ]]; then
  cp -r "$module_dir" "$SRC.partial"
  chmod -R u+w "$SRC.partial"
  mv "$SRC.partial" "$SRC"
fi
(
  cd "$WRAPPER"
  go mod edit -replace vbom.ml/util=github.com/fvbommel/util@v0.0.0-20160121211510-db5cfe13f5cc
  go mod edit -replace github.com/modern-go/reflect2=github.com/modern-go/reflect2@v1.0.2
  go mod edit -replace github.com/json-iterator/go=github.com/json-iterator/go@v1.1.12
  go mod edit -replace "k8s.io/kubernetes=$SRC"
)

# Packages asking for OpenAPI definitions: Kubernetes' own, and those of the staging modules it serves.
openapi_packages() {
  local module dir
  (cd "$SRC" && grep -rl --include='*.go' '^// +k8s:openapi-gen=' pkg cmd | xargs -n1 dirname | sort -u |
    sed 's|^|k8s.io/kubernetes/|')
  for module in api apimachinery apiextensions-apiserver apiserver kube-aggregator; do
    dir=$(go mod download -json "k8s.io/$module@$STAGING_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    (cd "$dir" && grep -rl --include='*.go' '^// +k8s:openapi-gen=' . | xargs -r -n1 dirname | sort -u |
      sed "s|^\.|k8s.io/$module|")
  done
}

generated=$SRC/pkg/generated/openapi/zz_generated.openapi.go
if [[ ! -f $generated ]]; then
  out=$CACHE/src/openapi-gen-$KUBE_VERSION
  (cd "$WRAPPER" && timed openapi-gen go run k8s.io/kube-openapi/cmd/openapi-gen --logtostderr \
    -i "$(openapi_packages | paste -sd,)" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h "$SRC/hack/boilerplate/boilerplate.generatego.txt" -o "$out" -r "$out/violations.report")
  cp "$out/k8s.io/kubernetes/pkg/generated/openapi/zz_generated.openapi.go" "$generated"
fi

(cd "$WRAPPER" && timed kube-apiserver go build -trimpath -ldflags "$(version_ldflags "$KUBE_VERSION")" \
  -o "$BIN/kube-apiserver.partial" k8s.io/kubernetes/cmd/kube-apiserver)
mv "$BIN/kube-apiserver.partial" "$BIN/kube-apiserver"
echo "$BIN"
