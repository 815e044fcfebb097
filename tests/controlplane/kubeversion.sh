# Sourced by tests/controlplane/build.sh and tests/realnode/build.sh: the Kubernetes release pinned in
# gotools/kubernetes/go.mod (one place to change it) and the version stamp every Kubernetes binary
# the tests build carries. It finds gotools/ from its own path, whichever script sources it.
kube_gotools=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/gotools/kubernetes

KUBE_VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$kube_gotools/go.mod")
if [[ ! "$KUBE_VERSION" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]]; then
  echo "cannot read the k8s.io/kubernetes version from $kube_gotools/go.mod" >&2
  exit 2
fi
KUBE_MAJOR=${BASH_REMATCH[1]}
KUBE_MINOR=${BASH_REMATCH[2]}

# Version stamp for the Kubernetes binaries. A plain `go build` leaves
# k8s.io/component-base/version at its placeholder (v0.0.0-master+$Format:%H$), which kubectl
# cannot parse (`kubectl version` exits 1) and which a kubelet reports as its node's version. These
# are the variables Kubernetes' own hack/lib/version.sh sets, in both packages it sets them in.
# buildDate is the release's commit time as the module proxy reports it, so the stamp is
# reproducible. The module carries no git commit hash, so gitCommit is left empty rather than invented.
kube_ldflags() {
  local date pkg key
  date=$(cd "$kube_gotools" && GOFLAGS=-mod=mod go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for key in "gitVersion=$KUBE_VERSION" "gitMajor=$KUBE_MAJOR" "gitMinor=$KUBE_MINOR" \
               "gitCommit=" "gitTreeState=clean" "buildDate=$date"; do
      printf -- '-X %s.%s ' "$pkg" "$key"
    done
  done
}
