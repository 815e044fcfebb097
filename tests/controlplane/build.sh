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

# The Kubernetes release pinned in gotools/kubernetes/go.mod (one place to change it).
KUBE_VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$here/gotools/kubernetes/go.mod")
if [[ ! "$KUBE_VERSION" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]]; then
  echo "controlplane: cannot read the k8s.io/kubernetes version from gotools/kubernetes/go.mod" >&2
  exit 2
fi
KUBE_MAJOR=${BASH_REMATCH[1]}
KUBE_MINOR=${BASH_REMATCH[2]}

# Version stamp for kube-apiserver and kube-controller-manager. A plain `go build` leaves
# k8s.io/component-base/version at its placeholder (v0.0.0-master+$Format:%H$), which kubectl
# cannot parse (`kubectl version` exits 1). These are the variables Kubernetes' own
# hack/lib/version.sh sets, in both packages it sets them in. buildDate is the release's
# commit time as the module proxy reports it, so the stamp is reproducible. The module
# carries no git commit hash, so gitCommit is left empty rather than invented.
kube_ldflags() {
  local date pkg key
  date=$(cd "$here/gotools/kubernetes" && GOFLAGS=-mod=mod go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for key in "gitVersion=$KUBE_VERSION" "gitMajor=$KUBE_MAJOR" "gitMinor=$KUBE_MINOR" \
               "gitCommit=" "gitTreeState=clean" "buildDate=$date"; do
      printf -- '-X %s.%s ' "$pkg" "$key"
    done
  done
}

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
