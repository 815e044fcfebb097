#!/usr/bin/env bash
# Regenerate podresources_pb2.py, podresources_pb2.pyi and podresources_pb2_grpc.py from
# podresources.proto.
#
# Why -I points at the agent source root: protoc writes the sibling import in the *_grpc.py module
# from the proto's path relative to the -I directory. Compiling
# "wattplane/agent/podresources/podresources.proto" relative to agent/ yields
# "from wattplane.agent.podresources import podresources_pb2", the import that works in the
# installed package; compiling from this folder would yield a bare "import podresources_pb2",
# which fails. No post-processing is needed.
#
# The generated modules hard-check the runtime: *_pb2.py refuses an older protobuf than the one
# grpcio-tools bundles, *_pb2_grpc.py refuses a grpcio older than grpcio-tools. Regenerate with the
# grpcio-tools release that matches the pinned grpcio (1.85.1 when this was written).
#
# Usage: agent/wattplane/agent/podresources/regenerate.sh [OUT_ROOT]
#   PYTHON   interpreter with grpcio-tools (default: <repo>/.venv/bin/python)
#   OUT_ROOT where the wattplane/agent/podresources/ tree is written (default: the agent root);
#            the drift test passes a temporary folder and compares.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
agent_root="$(cd "${here}/../../.." && pwd)"
repo_root="$(cd "${agent_root}/.." && pwd)"
python="${PYTHON:-${repo_root}/.venv/bin/python}"
out_root="${1:-${agent_root}}"
proto="wattplane/agent/podresources/podresources.proto"

mkdir -p "${out_root}/wattplane/agent/podresources"
cd "${agent_root}"
"${python}" -m grpc_tools.protoc \
    -I . \
    --python_out="${out_root}" \
    --pyi_out="${out_root}" \
    --grpc_python_out="${out_root}" \
    "${proto}"
