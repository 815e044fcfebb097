#!/usr/bin/env bash
# Builds the control-plane binaries the test tier runs (etcd, kube-apiserver,
# kube-controller-manager, kwok) from pinned Go modules into a cache folder.
# Rebuilds only when the binaries are missing or a pin changed; prints build times.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${WATTPLANE_CONTROLPLANE_BIN:-$root/.cache/controlplane/bin}
KWOK_VERSION=v0.7.0

if ! command -v go >/dev/null 2>&1; then
  echo "controlplane: no Go toolchain on PATH; cannot build kube-apiserver/etcd/kwok" >&2
  exit 3
fi

# KUBE_VERSION and kube_ldflags (the version stamp of every Kubernetes binary built here).
source "$here/kubeversion.sh"

stamp_of() {  # changes whenever a pin, the Go toolchain or the version stamp changes
  { cat "$here/gotools/kubernetes/go.mod" "$here/gotools/etcd/go.mod"; echo "kwok $KWOK_VERSION"; go env GOVERSION
    echo "ldflags $1"; } | sha256sum | cut -c1-16
}
LDFLAGS=$(kube_ldflags)
want=$(stamp_of "$LDFLAGS")
if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$want" ]] \
   && [[ -x "$out/etcd" && -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/kwok" ]]; then
  echo "controlplane: binaries up to date in $out"
  exit 0
fi

mkdir -p "$out"
rm -f "$out/.stamp"
export GOFLAGS=-mod=mod
timed() {  # timed LABEL CMD...: run CMD and report its wall time
  local label=$1; shift
  local t0=$SECONDS
  "$@"
  echo "controlplane: built $label in $((SECONDS - t0)) s"
}
t_all=$SECONDS
(cd "$here/gotools/etcd" && timed etcd go build -trimpath -o "$out/etcd" go.etcd.io/etcd/server/v3)
(cd "$here/gotools/kubernetes" && timed kube-apiserver go build -trimpath -ldflags "$LDFLAGS" -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
(cd "$here/gotools/kubernetes" && timed kube-controller-manager go build -trimpath -ldflags "$LDFLAGS" -o "$out/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager)
timed kwok env GOBIN="$out" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
echo "$want" > "$out/.stamp"
echo "controlplane: all binaries built in $((SECONDS - t_all)) s into $out"
