# syntax=docker/dockerfile:1
# The watcher daemon: loads each file dropped in /data_lake into PostgreSQL, then runs dbt.
#   docker build -t wearable-data-pipeline .
#   docker run -v "$PWD/data_lake:/data_lake:ro" -e DATABASE_URL=... -p 127.0.0.1:9108:9108 wearable-data-pipeline

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY watcher ./watcher
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
# tini is PID 1: it forwards SIGTERM to the daemon (which then finishes the file in hand and exits)
# and reaps any child process dbt leaves behind. Unpinned: the base image's Debian release fixes it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 wearable \
    && useradd --system --uid 10001 --gid wearable --home-dir /home/wearable --create-home \
       --shell /usr/sbin/nologin wearable
COPY --from=build /opt/venv /opt/venv
# The dbt project; dbt writes target/ and logs/ beside it, so the daemon's user owns it.
COPY --chown=wearable:wearable dbt /app/dbt
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WEARABLE_DBT_PROJECT_DIR=/app/dbt \
    WEARABLE_LOG_FORMAT=json
RUN mkdir /data_lake && chown wearable:wearable /data_lake
# Numeric, so that "runAsNonRoot" checks can verify it.
USER 10001:10001
# dbt packages (if the project has any) are fetched at build time, never at run time.
RUN if [ -f dbt/packages.yml ] || [ -f dbt/dependencies.yml ]; then \
        dbt deps --project-dir /app/dbt; \
    fi
EXPOSE 9108
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]
ENTRYPOINT ["tini", "--", "wearable-pipeline"]
CMD ["watch", "--data-dir", "/data_lake", "--metrics-addr", "0.0.0.0:9108"]
