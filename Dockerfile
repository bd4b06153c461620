# esm as a container: `esm run` against /etc/esm/esm.yaml, as an unprivileged user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/esm
COPY pyproject.toml README.md ./
COPY esm ./esm
# Optional extras, e.g. --build-arg EXTRAS=tracing for OpenTelemetry traces, or
# EXTRAS=tracing,kpl with KPL de-aggregation too. This project
# itself is installed, not a package from an index: DL3013's pinning does not apply.
ARG EXTRAS=""
# hadolint ignore=DL3013
RUN pip install ".${EXTRAS:+[${EXTRAS}]}" && rm -rf /opt/esm/build

# uid and gid 10001: what the Helm chart's securityContext (runAsUser, runAsGroup, fsGroup)
# expects. /var/lib/esm/state is where the chart mounts the state volume.
RUN groupadd --system --gid 10001 esm \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/esm --create-home esm \
    && install -d -o 10001 -g 10001 /var/lib/esm/state
USER 10001:10001
WORKDIR /var/lib/esm

# Metrics, health and status.
EXPOSE 9464
ENTRYPOINT ["esm", "run"]
CMD ["-c", "/etc/esm/esm.yaml"]
