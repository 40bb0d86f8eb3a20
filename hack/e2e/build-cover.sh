#!/usr/bin/env bash
# Build a coverage-instrumented kube-apiserver (`go build -cover`, atomic counters) for bench/covdata.py: the
# same release, wrapper module and flags as hack/e2e/build.sh's, into its own folder, so the plain binary the
# e2e tests run is never replaced. Opt in: `make e2e` does not build it.
#
#   hack/e2e/build-cover.sh      # prints the directory holding kube-apiserver as its last line
#   COVERPKG=k8s.io/... COVER_BIN=~/.cache/auditcov-e2e/bin/v1.36.3-cover-all hack/e2e/build-cover.sh
#                                # other packages instrumented, into another folder (a cached binary is reused)
#
# Instrumented by default: the server's own code, Kubernetes and the staging modules the apiserver is made of.
# Generated API types (k8s.io/api), client-go and third-party modules are left out.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
COVERPKG=${COVERPKG:-k8s.io/kubernetes/...,k8s.io/apiserver/...,k8s.io/apiextensions-apiserver/...,k8s.io/kube-aggregator/...,k8s.io/apimachinery/...,k8s.io/component-base/...}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
BIN=${COVER_BIN:-$CACHE/bin/$KUBE_VERSION-cover}

if [[ -x $BIN/kube-apiserver ]]; then
  echo "kube-apiserver $KUBE_VERSION (cover): cached" >&2
  echo "$BIN"
  exit 0
fi
if [[ ! -f $HERE/kube/go.mod ]]; then
  echo "hack/e2e/kube/go.mod is missing: run hack/e2e/build.sh first" >&2
  exit 1
fi
mkdir -p "$BIN"
(cd "$HERE/kube" && timed "kube-apiserver (cover)" go build -trimpath -ldflags "$(version_ldflags "$KUBE_VERSION")" \
  -cover -covermode=atomic "-coverpkg=$COVERPKG" -o "$BIN/kube-apiserver.partial" k8s.io/kubernetes/cmd/kube-apiserver)
mv "$BIN/kube-apiserver.partial" "$BIN/kube-apiserver"
echo "$BIN"
