# syntax=docker/dockerfile:1
# outbox-relay: one image for `relay` (the default), `api`, `migrate` and `status`.
#   docker build -t outbox-relay .
#   docker run --rm -e DATABASE_URL=... -e INNGEST_EVENT_KEY=... -p 9108:9108 outbox-relay
# See docs/operations.md.

# --- build: a virtualenv with the package and its pinned dependencies ------------------------
# Both stages on one exact Python: 3.11.7, the version the test suite and CI run on (.ci/run
# uses the machine's Python 3.11, 3.11.7 on the project's machines). A moving tag such as
# 3.11-slim would change the interpreter under the same Dockerfile; raise this with CI's Python.
FROM python:3.11.7-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/outbox-relay
ENV PATH=/opt/outbox-relay/bin:$PATH

WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY migrations/ migrations/
COPY outbox_relay/ outbox_relay/
RUN pip install -c constraints.txt . \
    && outbox-relay --help >/dev/null

# --- runtime: the virtualenv on a clean slim image, as a non-root user ------------------------
FROM python:3.11.7-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="outbox-relay" \
      org.opencontainers.image.description="Transactional outbox relay from PostgreSQL to Inngest" \
      org.opencontainers.image.licenses="MIT"

# The folders `outbox-relay scan` uses in Compose exist in the image, owned by the user, so the
# named volumes mounted on them start with that owner.
RUN groupadd --system --gid 10001 relay \
    && useradd --system --uid 10001 --gid relay --home-dir /home/relay --create-home \
       --shell /usr/sbin/nologin relay \
    && mkdir -p /home/relay/music/inbound /home/relay/music/staging /home/relay/scan-db \
    && chown -R relay:relay /home/relay

COPY --from=build /opt/outbox-relay /opt/outbox-relay

ENV PATH=/opt/outbox-relay/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OUTBOX_LOG_FORMAT=json \
    OUTBOX_HTTP_PORT=9108 \
    QDRANT_PATH=/home/relay/qdrant

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/relay

# 9108: the relay's /healthz, /readyz, /metrics; 8080: the write API (`api`).
EXPOSE 9108 8080

# Liveness of the relay (no curl in slim images). The `api` and `migrate` services override it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('OUTBOX_HTTP_PORT', '9108') + '/healthz', timeout=2)"]

# Exec form, no shell in between: outbox-relay is PID 1 and receives SIGTERM itself, finishes the
# batch in flight and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["outbox-relay"]
CMD ["relay"]
