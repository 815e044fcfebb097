# One image, two entry points: `wattplane-operator` (Deployment) and `wattplane-agent` (DaemonSet).
# Build stage: produce a wheel; final stage: install it into a slim base without build tools.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN pip install --no-cache-dir "build==1.2.2.post1"
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY agent/ agent/
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="wattplane" \
      org.opencontainers.image.description="GPU power control plane for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
# NVML comes from the driver, injected by the NVIDIA container runtime (utility capability).
ENV NVIDIA_DRIVER_CAPABILITIES=utility \
    NVIDIA_VISIBLE_DEVICES=all \
    PYTHONUNBUFFERED=1
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl \
    && useradd --system --uid 65532 --no-create-home wattplane
# The operator runs as this user; the agent's DaemonSet overrides to root + CAP_SYS_ADMIN only,
# which NVML power-limit writes require.
USER 65532
ENTRYPOINT ["wattplane-operator"]
