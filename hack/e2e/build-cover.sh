#!/usr/bin/env bash
# Build a coverage-instrumented kube-apiserver with auditcov's coverage agent in it (`auditcov cover build`:
# `go build -cover -covermode=atomic` plus the agent by -overlay), of the same release, wrapper module and flags
# as hack/e2e/build.sh's, into its own folder, so the plain binary the other e2e modes run is never replaced.
# `make e2e` builds it for its coverage mode; bench/covdata.py and bench/boundary.py use it too. Without
# AUDITCOV_AGENT in its environment the agent does nothing.
#
#   hack/e2e/build-cover.sh      # prints the directory holding kube-apiserver as its last line
#   COVERPKG=k8s.io/... COVER_BIN=~/.cache/auditcov-e2e/bin/v1.36.3-cover-all hack/e2e/build-cover.sh
#                                # other packages instrumented, into another folder (a cached binary is reused)
#   AUDITCOV=/path/to/auditcov hack/e2e/build-cover.sh   # another auditcov (default: the repository's .venv)
#
# Instrumented by default: the server's own code, Kubernetes and the staging modules the apiserver is made of.
# Generated API types (k8s.io/api), client-go and third-party modules are left out.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
COVERPKG=${COVERPKG:-k8s.io/kubernetes/...,k8s.io/apiserver/...,k8s.io/apiextensions-apiserver/...,k8s.io/kube-aggregator/...,k8s.io/apimachinery/...,k8s.io/component-base/...}
HERE=$(cd "$(dirname "$0")" && pwd)
AUDITCOV=${AUDITCOV:-$HERE/../../.venv/bin/auditcov}
source "$HERE/lib.sh"
BIN=${COVER_BIN:-$CACHE/bin/$KUBE_VERSION-cover}

if [[ -x $BIN/kube-apiserver ]]; then
  echo "kube-apiserver $KUBE_VERSION (cover, agent): cached" >&2
  echo "$BIN"
  exit 0
fi
if [[ ! -f $HERE/kube/go.mod ]]; then
  echo "hack/e2e/kube/go.mod is missing: run hack/e2e/build.sh first" >&2
  exit 1
fi
mkdir -p "$BIN"
timed "kube-apiserver (cover, agent)" "$AUDITCOV" cover build -C "$HERE/kube" -o "$BIN/kube-apiserver.partial" \
  k8s.io/kubernetes/cmd/kube-apiserver -- -trimpath -ldflags "$(version_ldflags "$KUBE_VERSION")" "-coverpkg=$COVERPKG"
mv "$BIN/kube-apiserver.partial" "$BIN/kube-apiserver"
echo "$BIN"
