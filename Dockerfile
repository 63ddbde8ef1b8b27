# One image for every megahub process. The role is the first argument:
#   web (default; waits for the database, migrates, then gunicorn) | worker | beat
#   | manage <command> | any executable
#
# Two stages. `build` installs uv, creates the virtualenv from uv.lock without the dev
# dependencies, and collects the static files. The runtime stage starts again from the slim
# Python image and copies only /app (code, .venv, staticfiles): no uv, pip cache or build
# layers, and it runs as the unprivileged user `megahub` under tini.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never

RUN pip install "uv>=0.13"

WORKDIR /app

# Dependencies first, from the lock file only: this layer is rebuilt when uv.lock changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project --compile-bytecode

COPY . .

# Static files are collected here and served by whitenoise. The key below exists only for this
# command; the running container must be given its own SECRET_KEY. The application's own
# modules are byte-compiled too (the runtime stage does not write bytecode).
RUN SECRET_KEY=build-only-collectstatic-key DEBUG=0 \
       DATABASE_URL=sqlite:///:memory: CELERY_BROKER_URL=memory:// \
       .venv/bin/python manage.py collectstatic --noinput -v0 \
    && .venv/bin/python -m compileall -q megahub task_core task_monitoring task_persistence \
       task_scheduling \
    && chmod 0755 bin/docker-entrypoint bin/health-check

# --- runtime -----------------------------------------------------------------------------------
# The same base image as `build`: the virtualenv's interpreter links to its /usr/local/bin/python.
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/app/.venv/bin:$PATH

# tini is PID 1: it forwards SIGTERM to the server and reaps orphaned processes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 1000 megahub \
    && useradd --system --uid 1000 --gid megahub --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin megahub

WORKDIR /app

# Owned by root, read-only for the user that runs it. .run/ is where settings put the embedded
# SQLite/broker defaults: the one writable directory.
COPY --from=build /app /app
RUN mkdir -p /app/.run && chown megahub:megahub /app/.run

USER megahub
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/app/bin/docker-entrypoint"]
CMD ["web"]
