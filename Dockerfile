# One image, two entry points: `wattplane-operator` (Deployment) and `wattplane-agent` (DaemonSet);
# the chart sets the command of each. The build stage resolves nothing: it installs the pinned
# closure from image-requirements.txt into a virtualenv, builds the wattplane wheel and adds it with
# --no-deps. The final stage copies only that virtualenv: no build frontend, no wheel cache, no pip
# inside the venv.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN pip install --no-cache-dir "build==1.2.2.post1" \
    && python -m venv --without-pip /opt/wattplane
COPY image-requirements.txt ./
RUN pip --python /opt/wattplane/bin/python install --no-cache-dir --only-binary=:all: -r image-requirements.txt
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY agent/ agent/
RUN python -m build --wheel --outdir /dist \
    && pip --python /opt/wattplane/bin/python install --no-cache-dir --no-deps /dist/*.whl

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="wattplane" \
      org.opencontainers.image.description="GPU power control plane for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
# NVML comes from the driver, injected by the NVIDIA container runtime (utility capability).
ENV NVIDIA_DRIVER_CAPABILITIES=utility \
    NVIDIA_VISIBLE_DEVICES=all \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/wattplane/bin:$PATH
COPY --from=build /opt/wattplane /opt/wattplane
RUN groupadd --system --gid 65532 wattplane \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin wattplane
# The operator runs as this user. The agent's DaemonSet overrides it to root with every capability
# dropped, adding back only CAP_SYS_ADMIN on the NVML backend (power-limit writes need it).
USER 65532:65532
CMD ["wattplane-operator"]
