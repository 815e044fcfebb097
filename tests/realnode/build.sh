#!/usr/bin/env bash
# Builds what the real-node tier runs, into a cache folder (default .cache/realnode), rebuilding a
# part only when its inputs changed:
#   bin/kubelet, bin/kube-scheduler
#                      from the k8s.io/kubernetes module pinned for the control plane, with the same
#                      version stamp as kube-apiserver (tests/controlplane/kubeversion.sh); the
#                      kwok tiers need no scheduler, a real node does (Deployment and workload pods)
#   bin/pause          the pod sandbox process (gotools/pause)
#   bin/simgpu-plugin  a device plugin advertising simulated GPUs as nvidia.com/gpu
#   images/pause.tar   the sandbox image, from bin/pause (containerd's sandbox_image)
#   images/wattplane.tar  the project's image, built by buildah from the repository's Dockerfile,
#                      unmodified, on a python:3.11-slim-bookworm equivalent built here from Debian
#                      bookworm packages (mmdebstrap): no registry is ever pulled from.
# The images are docker-archives, ready for `ctr images import`. buildah's storage (vfs) lives in
# the cache folder too, so the base image and the build stage's layers survive between runs.
# Prints each part's build time. Needs Go, buildah and mmdebstrap (tests/realnode/setup.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${WATTPLANE_REALNODE_CACHE:-$root/.cache/realnode}
bin=$out/bin
images=$out/images
BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
PAUSE_IMAGE=localhost/wattplane/pause:realnode
IMAGE=${WATTPLANE_REALNODE_IMAGE:-localhost/wattplane:realnode}

for tool in go buildah mmdebstrap; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "realnode: $tool is not on PATH (tests/realnode/setup.sh installs the host packages)" >&2
    exit 3
  fi
done
# KUBE_VERSION and kube_ldflags: the kubelet carries the control plane's version stamp.
source "$root/tests/controlplane/kubeversion.sh"

timed() {  # timed LABEL CMD...: run CMD and report its wall time
  local label=$1; shift
  local t0=$SECONDS
  "$@"
  echo "realnode: built $label in $((SECONDS - t0)) s"
}
fresh() {  # fresh STAMPFILE WANT FILE...: true when every FILE exists and STAMPFILE holds WANT
  local stamp=$1 want=$2; shift 2
  [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] || return 1
  local f; for f in "$@"; do [[ -e "$f" ]] || return 1; done
}
mkdir -p "$bin" "$images" "$out/containers"
t_all=$SECONDS

# --- Go binaries ---------------------------------------------------------------------------------
LDFLAGS=$(kube_ldflags)
want=$({ cat "$kube_gotools/go.mod" "$here/gotools/go.mod" "$here/gotools/go.sum"
         find "$here/gotools" -name '*.go' -print0 | sort -z | xargs -0 cat
         go env GOVERSION; echo "ldflags $LDFLAGS"; } | sha256sum | cut -c1-16)
if fresh "$bin/.stamp" "$want" "$bin/kubelet" "$bin/kube-scheduler" "$bin/pause" "$bin/simgpu-plugin"; then
  echo "realnode: binaries up to date in $bin"
else
  rm -f "$bin/.stamp"
  export GOFLAGS=-mod=mod
  (cd "$kube_gotools" && timed kubelet go build -trimpath -ldflags "$LDFLAGS" -o "$bin/kubelet" k8s.io/kubernetes/cmd/kubelet)
  (cd "$kube_gotools" && timed kube-scheduler go build -trimpath -ldflags "$LDFLAGS" -o "$bin/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler)
  (cd "$here/gotools" && timed "pause and simgpu-plugin" env CGO_ENABLED=0 go build -trimpath -o "$bin/" ./pause ./simgpu-plugin)
  echo "$want" > "$bin/.stamp"
fi

# --- buildah, rootless of any daemon: vfs storage in the cache, host network for RUN steps ------
bah() {
  buildah --storage-driver vfs --root "$out/containers/storage" --runroot "$out/containers/run" "$@"
}
export BUILDAH_ISOLATION=chroot
export BUILDAH_FORMAT=docker

# --- base image: python:3.11-slim-bookworm from Debian bookworm packages -------------------------
# Equivalent for this Dockerfile: `python` and `pip` on PATH, a pip that installs into the system
# interpreter (the official image's pip is not Debian-managed, so no EXTERNALLY-MANAGED marker),
# the venv module, groupadd/useradd, CA certificates, a C.UTF-8 locale, CMD python3.
# The build machine's own extra CA certificates (/usr/local/share/ca-certificates, e.g. a
# TLS-inspecting egress proxy's) are added to the image's trust store, so the Dockerfile's pip can
# reach PyPI from where this machine can; where there are none, the store is Debian's alone.
BASE_PACKAGES=python3.11,python3.11-venv,python3-pip,python-is-python3,passwd,ca-certificates
LOCAL_CAS=/usr/local/share/ca-certificates
base_want=$({ echo "bookworm minbase $BASE_PACKAGES v1"
              find "$LOCAL_CAS" -name '*.crt' -type f -print0 2>/dev/null | sort -z | xargs -0r cat; } \
            | sha256sum | cut -c1-16)
if [[ "$(bah inspect --type image --format '{{index .OCIv1.Config.Labels "io.wattplane.base-recipe"}}' "$BASE_IMAGE" 2>/dev/null)" == "$base_want" ]]; then
  echo "realnode: base image $BASE_IMAGE up to date"
else
  build_base() {
    local tmp ctr
    tmp=$(mktemp -d)
    mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
      --aptopt='Acquire::Retries "3"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
      --customize-hook="if ls $LOCAL_CAS/*.crt >/dev/null 2>&1; then cp $LOCAL_CAS/*.crt \"\$1\"$LOCAL_CAS/ && chroot \"\$1\" update-ca-certificates >/dev/null; fi" \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      bookworm "$tmp/rootfs.tar"
    ctr=$(bah from scratch)
    bah add --quiet "$ctr" "$tmp/rootfs.tar" / >/dev/null
    bah config --env LANG=C.UTF-8 \
      --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --cmd python3 --label "io.wattplane.base-recipe=$base_want" \
      --label org.opencontainers.image.description="python:3.11-slim-bookworm equivalent from Debian bookworm packages" \
      "$ctr"
    bah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    rm -rf "$tmp"
    bah rmi --prune >/dev/null 2>&1 || true  # the replaced base and the layers built on it
  }
  timed "base image $BASE_IMAGE" build_base
fi

# --- sandbox (pause) image -----------------------------------------------------------------------
pause_want=$(cat "$bin/.stamp")
if fresh "$images/pause.stamp" "$pause_want" "$images/pause.tar"; then
  echo "realnode: sandbox image up to date"
else
  build_pause() {
    local ctr
    ctr=$(bah from scratch)
    bah copy --quiet "$ctr" "$bin/pause" /pause >/dev/null
    bah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
    bah commit --quiet --rm "$ctr" "$PAUSE_IMAGE" >/dev/null
    rm -f "$images/pause.tar"
    bah push --quiet "$PAUSE_IMAGE" "docker-archive:$images/pause.tar:$PAUSE_IMAGE"
  }
  timed "sandbox image $PAUSE_IMAGE" build_pause
  echo "$pause_want" > "$images/pause.stamp"
fi

# --- the project's image, from its Dockerfile ---------------------------------------------------
# Rebuilt when anything the Dockerfile copies (or the base image) changed.
image_want=$({ cd "$root"; echo "$base_want $IMAGE"
               git ls-files -co --exclude-standard -- Dockerfile .dockerignore image-requirements.txt \
                 pyproject.toml README.md operator agent | sort | xargs sha256sum; } | sha256sum | cut -c1-16)
if fresh "$images/wattplane.stamp" "$image_want" "$images/wattplane.tar"; then
  echo "realnode: image $IMAGE up to date"
else
  build_image() {
    # --pull=never: the base must be the one built above; a registry is never asked. No layer
    # cache: with vfs every cached layer is a full copy of the filesystem, and each source change
    # would leave another gigabyte behind; the image from the previous build is dropped likewise.
    bah bud --quiet --pull=never --network host -f "$root/Dockerfile" -t "$IMAGE" "$root" >/dev/null
    bah rmi --prune >/dev/null 2>&1 || true
    rm -f "$images/wattplane.tar"
    bah push --quiet "$IMAGE" "docker-archive:$images/wattplane.tar:$IMAGE"
  }
  timed "image $IMAGE from the Dockerfile" build_image
  echo "$image_want" > "$images/wattplane.stamp"
fi
echo "realnode: everything ready in $((SECONDS - t_all)) s in $out"
