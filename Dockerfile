# The watcher daemon: loads each file dropped in /data_lake into PostgreSQL, then runs dbt.
#   docker build -t wearable-data-pipeline .
#   docker run --read-only --tmpfs /tmp -v "$PWD/data_lake:/data_lake:ro" -e DATABASE_URL=... \
#       -p 127.0.0.1:9108:9108 wearable-data-pipeline
# Runs read-only under any UID with group 0 (OpenShift). Build arguments:
#   BASE_IMAGE     a Python 3.11 image of Debian (default python:3.11-slim)
#   WITH_EMBEDDED  true: also install the embedded PostgreSQL, used when no database is set
# Dependencies come from the hashed lock files only (make lock updates them); see docs/deploy.md.

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG WITH_EMBEDDED=false
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements.lock requirements-embedded.lock ./
# Every package pinned, with its hash; setuptools and wheel (in the lock) build the project below.
RUN lock=requirements.lock; \
    if [ "$WITH_EMBEDDED" = true ]; then lock=requirements-embedded.lock; fi; \
    /opt/venv/bin/python -m pip install --require-hashes --no-deps -r "$lock"
COPY pyproject.toml README.md ./
COPY watcher ./watcher
# The service needs neither pip nor the build tools at run time.
RUN /opt/venv/bin/python -m pip install --no-deps --no-build-isolation --no-index . \
    && /opt/venv/bin/python -m pip uninstall --yes setuptools wheel \
    && /opt/venv/bin/python -m pip uninstall --yes pip

FROM ${BASE_IMAGE}
ARG WITH_EMBEDDED=false
# tini is PID 1: it forwards SIGTERM to the daemon (which then finishes the file in hand and exits)
# and reaps any child process dbt leaves behind. nss_wrapper (with the embedded server only) gives
# initdb a user name under a UID that has none. Unpinned: the base image's Debian release fixes them.
# hadolint ignore=DL3008,SC2086
RUN packages=tini; \
    if [ "$WITH_EMBEDDED" = true ]; then packages="$packages libnss-wrapper"; fi; \
    apt-get update \
    && apt-get install -y --no-install-recommends $packages \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
# The image's own user; any other UID works as well when its group is 0 (OpenShift), since
# the one folder the service writes to outside /tmp belongs to group 0.
RUN useradd --system --uid 10001 --gid 0 --home-dir /var/lib/wearable --no-create-home \
       --shell /usr/sbin/nologin wearable \
    && install -d -o 10001 -g 0 -m 0770 /var/lib/wearable \
    && install -d -m 0755 /data_lake
COPY --from=build /opt/venv /opt/venv
# The dbt project is read-only; dbt writes its target/ and logs/ under /tmp (a tmpfs with --read-only).
COPY dbt /app/dbt
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WEARABLE_DBT_PROJECT_DIR=/app/dbt \
    WEARABLE_LOG_FORMAT=json \
    WEARABLE_PGDATA=/var/lib/wearable/pgdata \
    DBT_TARGET_PATH=/tmp/dbt/target \
    DBT_LOG_PATH=/tmp/dbt/logs \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false
# dbt packages (if the project has any) are fetched at build time, never at run time.
RUN if [ -f dbt/packages.yml ] || [ -f dbt/dependencies.yml ]; then \
        dbt deps --project-dir /app/dbt; \
    fi
# The embedded server's data, when no database is set: a volume, so that it outlives the container.
VOLUME ["/var/lib/wearable"]
# Numeric, so that "runAsNonRoot" checks can verify it.
USER 10001:0
EXPOSE 9108
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]
ENTRYPOINT ["tini", "--", "wearable-pipeline"]
CMD ["watch", "--data-dir", "/data_lake", "--metrics-addr", "0.0.0.0:9108"]
