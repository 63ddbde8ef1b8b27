# One image for every megahub process. The role is the first argument:
#   web (default; migrates, then gunicorn) | worker | beat | manage <command> | any executable
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    PATH=/app/.venv/bin:$PATH

# tini is PID 1: it forwards SIGTERM to the server and reaps orphaned processes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && pip install "uv>=0.13" \
    && groupadd --system --gid 1000 megahub \
    && useradd --system --uid 1000 --gid megahub --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin megahub

WORKDIR /app

# Dependencies first, from the lock file only: this layer is rebuilt when uv.lock changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

COPY . .

# Static files are collected at build time and served by whitenoise. The key below exists
# only for this command; the running container must be given its own SECRET_KEY.
# .run/ is where settings put the embedded SQLite/broker defaults: it must be writable.
RUN SECRET_KEY=build-only-collectstatic-key DEBUG=0 \
       DATABASE_URL=sqlite:///:memory: CELERY_BROKER_URL=memory:// \
       python manage.py collectstatic --noinput -v0 \
    && chmod 0755 bin/docker-entrypoint \
    && mkdir -p /app/.run \
    && chown megahub:megahub /app/.run

USER megahub
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/app/bin/docker-entrypoint"]
CMD ["web"]
