#!/usr/bin/env bash
# Installs the host packages the real-node tier runs (Debian/Ubuntu, as root): containerd (the CRI
# runtime), runc, the CNI plugins (bridge, host-local, loopback), buildah (builds the images without
# a Docker engine) and mmdebstrap (builds the Python base image from Debian packages). Installs only
# what is missing; never starts a service (containerd's unit is kept from starting, and stopped if
# it started anyway): the tier runs its own containerd with its own configuration.
# Exit status: 0 when everything is present afterwards, 3 when it cannot install (not root, no apt).
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [[ -x "$2" ]]; }
have containerd /usr/bin/containerd || missing+=(containerd)
have runc /usr/sbin/runc || missing+=(runc)
have buildah /usr/bin/buildah || missing+=(buildah)
have mmdebstrap /usr/bin/mmdebstrap || missing+=(mmdebstrap)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/loopback && -x /usr/lib/cni/host-local ]] \
  || missing+=(containernetworking-plugins)
have iptables /usr/sbin/iptables || missing+=(iptables)
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "realnode: host packages present"
  exit 0
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "realnode: missing ${missing[*]} and not root on Debian: cannot install them" >&2
  exit 3
fi
echo "realnode: apt-get install ${missing[*]}"
own_policy=""
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  own_policy=1
fi
rc=0
{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
       apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }; } || rc=$?
[[ -n "$own_policy" ]] && rm -f /usr/sbin/policy-rc.d
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  systemctl disable --now containerd >/dev/null 2>&1 || true
fi
if [[ "$rc" != 0 ]]; then
  echo "realnode: apt-get install failed (exit $rc)" >&2
  exit 3
fi
