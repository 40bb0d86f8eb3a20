#!/usr/bin/env bash
# Build the control plane the end-to-end test runs against: kube-apiserver, kube-controller-manager, kubectl,
# e2e.test (all from k8s.io/kubernetes at KUBE_VERSION) and etcd (at the version that release pins), from
# published Go modules. Module and build caches live under one folder, so a second run rebuilds nothing.
#
#   hack/e2e/build.sh            # builds what is missing, prints each build's time
#   AUDITCOV_E2E_CACHE=/big/disk hack/e2e/build.sh
#
# Prints the directory holding the binaries as its last line.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
BIN=$CACHE/bin/$KUBE_VERSION
mkdir -p "$BIN"

# The wrapper modules are generated from the real go.mod of the pinned release (see gen_gomod.py).
kube_gomod=$(go_mod_of "k8s.io/kubernetes@$KUBE_VERSION")
python3 "$HERE/gen_gomod.py" kube "$kube_gomod" "$KUBE_VERSION" "$HERE/kube"
python3 "$HERE/gen_gomod.py" etcd "$kube_gomod" "$HERE/etcd"
ldflags=$(version_ldflags "$KUBE_VERSION")

# build NAME DIR GO-SUBCOMMAND ARGS...: skip when the binary exists; otherwise time the build.
build() {
  local name=$1 dir=$2 subcommand=$3
  shift 3
  if [[ -x $BIN/$name ]]; then
    echo "$name: cached" >&2
    return
  fi
  (cd "$dir" && timed "$name" go "$subcommand" -o "$BIN/$name.partial" "$@")
  mv "$BIN/$name.partial" "$BIN/$name"
}

build etcd "$HERE/etcd" build -trimpath go.etcd.io/etcd/server/v3
build kube-apiserver "$HERE/kube" build -trimpath -ldflags "$ldflags" k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager "$HERE/kube" build -trimpath -ldflags "$ldflags" k8s.io/kubernetes/cmd/kube-controller-manager
build kubectl "$HERE/kube" build -trimpath -ldflags "$ldflags" k8s.io/kubernetes/cmd/kubectl
build e2e.test "$HERE/kube" test -c -vet=off -trimpath -ldflags "$ldflags" k8s.io/kubernetes/test/e2e

echo "$BIN"
