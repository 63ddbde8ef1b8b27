"""megahub settings: one module, configured by environment variables only (12-factor).

Every variable is documented in docs/configuration.md. With no environment at all the
project runs on embedded defaults that need no server: SQLite and kombu's filesystem transport.
"""

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = BASE_DIR / ".run"  # embedded-default state: SQLite file, filesystem broker folders


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Core ---------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
# A fixed development key is only acceptable while DEBUG is on; production must set SECRET_KEY.
SECRET_KEY = os.environ.get("SECRET_KEY") or (
    "dev-insecure-megahub-key-only-for-local-development" if DEBUG else ""
)
if not SECRET_KEY:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "task_core",
    "task_persistence",
    "task_monitoring",
    "task_scheduling",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "megahub.trailing_slash.AppendSlashForWritesMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "megahub.urls"
WSGI_APPLICATION = "megahub.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# --- Database -----------------------------------------------------------------------------
# SQLite (embedded default) gets WAL and IMMEDIATE transactions so web, worker and beat can
# share one file without "database is locked" errors.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{RUN_DIR / 'megahub.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    RUN_DIR.mkdir(exist_ok=True)
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    # A statement that cannot get a connection or a lock quickly fails instead of hanging.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int(
        "DB_CONNECT_TIMEOUT", 5
    )
    # Server-side prepared statements for the worker's own statements (claim, outcome,
    # heartbeat: task_core.state_machine.cursor binds on the server; the ORM's cursors bind on
    # the client and are never prepared): prepared once run N times on a connection. "off"
    # behind a pooler that cannot keep them (pgbouncer transaction pooling before 1.21, or
    # without max_prepared_statements).
    _prepare = os.environ.get("DB_PREPARE_THRESHOLD", "1").strip().lower()
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = (
        None if _prepare in ("off", "none", "") else int(_prepare)
    )

# --- Auth, sessions, security ---------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/admin/login/"
# With DEBUG off the defaults assume HTTPS in front: http is redirected, HSTS is sent, cookies
# are Secure. Plain-http setups (localhost, the compose file) opt out explicitly.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Probes and scrapes come over plain http from inside the network: never redirected.
SECURE_REDIRECT_EXEMPT = [r"^health(/|$)", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
# On with DEBUG off (check --deploy is clean): the header only makes the domain eligible for the
# browsers' preload list; nothing is listed until its owner submits it. SECURE_HSTS_PRELOAD=0 for
# a domain whose subdomains cannot all serve HTTPS.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Cache ---------------------------------------------------------------------------------
# Throttle counters (and anything else cached) live here. The embedded default is per-process
# memory, which needs no server but lets N web processes allow N times a rate; with REDIS_URL
# every process shares one Redis. A Redis outage never fails a request (throttles let it pass).
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Several deployments (or test runs) can share one Redis database.
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "megahub"),
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- I18N / static ------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "megahub.auth.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Deny by default: every view must say who may use it.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": [
        "megahub.filters.DjangoFilterBackendIfAsked",
        "rest_framework.filters.SearchFilter",
        "megahub.filters.StrictOrderingFilter",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "megahub.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "megahub.throttling.UserThrottle",
        "megahub.throttling.AnonThrottle",
    ],
    "DEFAULT_PAGINATION_CLASS": "megahub.pagination.KeysetPagination",
    "EXCEPTION_HANDLER": "megahub.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "megahub.schema.MegahubAutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
API_PAGE_SIZE = env_int("API_PAGE_SIZE", 50)
API_MAX_PAGE_SIZE = env_int("API_MAX_PAGE_SIZE", 500)
# Rates are "<n>/<second|minute|hour|day>", read on every request so they can be tuned live.
THROTTLE_USER_RATE = os.environ.get("THROTTLE_USER_RATE", "6000/minute")
THROTTLE_ANON_RATE = os.environ.get("THROTTLE_ANON_RATE", "120/minute")

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 1)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "AUTH_HEADER_TYPES": ("Bearer",),
    # Tokens carry a digest of the password hash: a password change revokes them at once.
    "CHECK_REVOKE_TOKEN": True,
    "CHECK_USER_IS_ACTIVE": True,
    "TOKEN_OBTAIN_SERIALIZER": "megahub.auth.TokenObtainPairSerializer",
    "TOKEN_REFRESH_SERIALIZER": "megahub.auth.TokenRefreshSerializer",
    "TOKEN_VERIFY_SERIALIZER": "megahub.auth.TokenVerifySerializer",
}
# The authenticated user (active, password digest) and each (user, brand) membership are read
# from the cache (above) for this many seconds; saving or deleting them drops the entry at once,
# and any other change (another process on the per-process cache) applies within this. 0: off.
AUTH_CACHE_SECONDS = env_int("AUTH_CACHE_SECONDS", 5)
# A refresh chain (one login and its rotations) ends this long after the login, however often
# it is refreshed: a stolen refresh token cannot be kept alive forever.
JWT_REFRESH_ABSOLUTE_LIFETIME = timedelta(days=env_int("JWT_REFRESH_ABSOLUTE_DAYS", 7))

SPECTACULAR_SETTINGS = {
    "TITLE": "megahub API",
    "DESCRIPTION": (
        "Multi-tenant backoffice for asynchronous tasks. Every brand-scoped endpoint needs "
        "`Authorization: Bearer <access>` and `X-Brand-ID: <brand id>`. Errors always have the "
        "shape `{detail, error_code, field_errors?}`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "task_core.models.Task.Status",
        "TaskPriorityEnum": "task_core.models.Task.Priority",
        "RoleEnum": "task_core.models.BrandMembership.Role",
    },
    "APPEND_COMPONENTS": {
        "securitySchemes": {"brandHeader": {"type": "apiKey", "in": "header", "name": "X-Brand-ID"}}
    },
}

# --- Celery -------------------------------------------------------------------------------
# Embedded default: kombu's filesystem transport (no server). RabbitMQ when CELERY_BROKER_URL
# says amqp://. Priorities and live queue depth need RabbitMQ.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = RUN_DIR / "broker"
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# Lets several deployments or test runs share one broker vhost without stealing messages.
CELERY_QUEUE_PREFIX = os.environ.get("CELERY_QUEUE_PREFIX", "")
# Queues task types may use. A worker started without -Q consumes all of CELERY_TASK_QUEUES.
MEGAHUB_QUEUES = ["default", "long"]
# The shipped demo and test-only task types (seo_keyword_analysis, memory_probe, ...) exist only
# when this is on: `make run`, compose and the tests turn it on; production leaves it off.
MEGAHUB_DEMO_TASK_TYPES = env_bool("MEGAHUB_DEMO_TASK_TYPES", False)
# The platform's own periodic work (release loop, sweeper) has its own queue so that it is
# never stuck behind a backlog of brand tasks.
MEGAHUB_SYSTEM_QUEUE = "system"
CELERY_TASK_DEFAULT_QUEUE = f"{CELERY_QUEUE_PREFIX}default"
CELERY_TASK_QUEUES = [
    Queue(
        f"{CELERY_QUEUE_PREFIX}{name}",
        Exchange(f"{CELERY_QUEUE_PREFIX}megahub.tasks", type="direct"),
        routing_key=name,
        queue_arguments={"x-max-priority": 10},
    )
    for name in [*MEGAHUB_QUEUES, MEGAHUB_SYSTEM_QUEUE]
]
# The platform's own periodic loops, one name per operation: the service function, the Celery
# task (megahub.<name>) and the management command (where there is one) share it. Every loop
# runs on the system queue; a brand task's execution message names its type's queue when it is
# published (task_core/publishing.py), so it needs no route.
MEGAHUB_PLATFORM_LOOPS = [
    "megahub.tasks_release_due",
    "megahub.tasks_sweep",
    "megahub.events_relay",
    "megahub.webhooks_deliver_due",
    "megahub.checkpoints_prune",
    "megahub.schedules_dispatch_due",
    "megahub.alert_rules_evaluate",
    "megahub.alert_notifications_deliver",
    "megahub.monitoring_prune",
]
CELERY_TASK_ROUTES = {
    name: {
        "queue": f"{CELERY_QUEUE_PREFIX}{MEGAHUB_SYSTEM_QUEUE}",
        "routing_key": MEGAHUB_SYSTEM_QUEUE,
    }
    for name in MEGAHUB_PLATFORM_LOOPS
}
CELERY_TASK_QUEUE_MAX_PRIORITY = 10
CELERY_TASK_DEFAULT_PRIORITY = 4
# The platform's ticks are acknowledged after they ran (a lost tick is redelivered). A brand
# task's execution message is acknowledged when a pool process takes it, right before the
# database claim (task_core/tasks.py): from then on the claim, the heartbeat and the sweeper
# own the task, and no delivery stays unacknowledged for the length of a task, past RabbitMQ's
# consumer_timeout (docs/execution.md, "Acknowledgement").
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A channel the broker closes (e.g. a message held in a worker's prefetch past consumer_timeout
# while every slot runs a long task) is reconnected like a lost connection, never a worker exit.
CELERY_BROKER_CHANNEL_ERROR_RETRY = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a critical task can overtake a low-priority backlog
CELERY_TASK_IGNORE_RESULT = True
# Celery's Django fixup closes the database connection around every task unless this is set
# (a new PostgreSQL backend per task). With it, connections live as in a web request:
# megahub/celery.py runs close_old_connections() around each task, so DB_CONN_MAX_AGE and the
# health check apply and a broken connection is replaced before the next task. 0 = a new
# connection per task; otherwise the fixup also recycles it every this many tasks.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's own monitoring events (Flower, `celery events`): workers send task-received/started/
# succeeded/failed/retried, producers task-sent. Brand tasks show under megahub.<task_type>;
# the platform's ticks send none (megahub.celery.SystemTicksQuiet, and beat sends no task-sent).
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_SEND_EVENTS", True)
CELERY_TASK_SEND_SENT_EVENT = env_bool("CELERY_SEND_SENT_EVENT", CELERY_WORKER_SEND_TASK_EVENTS)
# A worker publishes its task events in batches, at most this long after they happen
# (megahub.celery.EventsBatched); 0 flushes at the next turn of the event loop, as Celery does.
WORKER_EVENTS_FLUSH_MS = env_int("WORKER_EVENTS_FLUSH_MS", 100)
CELERY_TASK_ANNOTATIONS = ["megahub.celery.SystemTicksQuiet"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# django-celery-beat's DatabaseScheduler, which also deletes megahub.* rows no longer declared.
CELERY_BEAT_SCHEDULER = "megahub.beat:PlatformScheduler"
# Beat saves last_run_at after this many sends (not only every 3 min): /health/ready/ reads it.
CELERY_BEAT_SYNC_EVERY = 10
CELERY_TIMEZONE = "UTC"

# --- Task execution -----------------------------------------------------------------------
# How often a running attempt refreshes its heartbeat, and how long silence means the worker
# is gone (the sweeper then rescues the task).
TASK_HEARTBEAT_SECONDS = env_int("TASK_HEARTBEAT_SECONDS", 5)
TASK_HEARTBEAT_TIMEOUT_SECONDS = env_int("TASK_HEARTBEAT_TIMEOUT_SECONDS", 30)
# A task whose publish after commit was not confirmed within this delay is republished.
TASK_PUBLISH_GRACE_SECONDS = env_int("TASK_PUBLISH_GRACE_SECONDS", 15)
# A task queued this long while its broker queue is empty lost its message: republish it.
TASK_QUEUED_LOST_SECONDS = env_int("TASK_QUEUED_LOST_SECONDS", 120)
TASK_RELEASE_INTERVAL_SECONDS = env_int("TASK_RELEASE_INTERVAL_SECONDS", 2)
TASK_SWEEP_INTERVAL_SECONDS = env_int("TASK_SWEEP_INTERVAL_SECONDS", 10)
TASK_RELEASE_BATCH = env_int("TASK_RELEASE_BATCH", 500)
# Fair share between brands: the broker holds at most this many of a brand's tasks per priority
# level and above (x its BrandLimit weight); the rest waits in PostgreSQL and is released as
# they start. TASK_FAIR_SHARE=0 publishes everything at once (benchmarks compare the two).
TASK_BRAND_WINDOW = env_int("TASK_BRAND_WINDOW", 20)
TASK_FAIR_SHARE = env_bool("TASK_FAIR_SHARE", True)
# The releaser (a thread of every worker consuming the system queue) refills a brand's window as
# soon as its tasks finish (LISTEN/NOTIFY), gathering the wake-ups of this many milliseconds into
# one release. TASK_RELEASER=0: the release loop alone refills (every release interval).
TASK_RELEASER = env_bool("TASK_RELEASER", True)
TASK_RELEASER_COALESCE_MS = env_int("TASK_RELEASER_COALESCE_MS", 5)
# Broker publish: how often to retry one publish before leaving it to the sweeper.
TASK_PUBLISH_RETRIES = env_int("TASK_PUBLISH_RETRIES", 2)

# --- Messaging ----------------------------------------------------------------------------
EVENTS_RELAY_INTERVAL_SECONDS = env_int("EVENTS_RELAY_INTERVAL_SECONDS", 1)
EVENTS_RELAY_BATCH = env_int("EVENTS_RELAY_BATCH", 500)
# /health/ready/ warns when this many lifecycle events wait to be published.
EVENTS_BACKLOG_WARN = env_int("EVENTS_BACKLOG_WARN", 1000)
TASK_REQUEST_MAX_BYTES = env_int("TASK_REQUEST_MAX_BYTES", 65536)
# Deliveries of one request message before RabbitMQ dead-letters it (a message that keeps
# crashing consumers).
TASK_REQUESTS_DELIVERY_LIMIT = env_int("TASK_REQUESTS_DELIVERY_LIMIT", 5)
TASK_REQUESTS_PREFETCH = env_int("TASK_REQUESTS_PREFETCH", 20)

# Brand webhooks: per-attempt timeout, retries with exponential backoff, auto-disable.
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 5)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8)
WEBHOOK_BACKOFF_SECONDS = env_int("WEBHOOK_BACKOFF_SECONDS", 2)
WEBHOOK_BACKOFF_MAX_SECONDS = env_int("WEBHOOK_BACKOFF_MAX_SECONDS", 3600)
WEBHOOK_DISABLE_AFTER_FAILURES = env_int("WEBHOOK_DISABLE_AFTER_FAILURES", 20)
WEBHOOK_DELIVER_INTERVAL_SECONDS = env_int("WEBHOOK_DELIVER_INTERVAL_SECONDS", 2)
# Networks (CIDR, comma-separated) webhooks and alert webhooks may reach although they are not
# public (loopback, private...): for local development only. Empty: public addresses only.
WEBHOOK_ALLOWED_NETWORKS = env_list("WEBHOOK_ALLOWED_NETWORKS", "")
for _network in WEBHOOK_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"WEBHOOK_ALLOWED_NETWORKS: {_network!r} is not a network")

# --- Persistent jobs (task_persistence) -----------------------------------------------------
# Largest handler state a checkpoint may hold (JSON bytes); checkpoints kept per completed job;
# automatic resumptions after a lost worker before a job waits as interrupted (types may
# override it with options={"auto_resume_max": K}); period of the checkpoint pruning.
JOB_CHECKPOINT_MAX_STATE_BYTES = env_int("JOB_CHECKPOINT_MAX_STATE_BYTES", 65536)
JOB_CHECKPOINTS_KEEP = env_int("JOB_CHECKPOINTS_KEEP", 5)
JOB_AUTO_RESUME_MAX = env_int("JOB_AUTO_RESUME_MAX", 3)
JOB_CHECKPOINT_PRUNE_INTERVAL_SECONDS = env_int("JOB_CHECKPOINT_PRUNE_INTERVAL_SECONDS", 3600)

# --- Scheduling (task_scheduling) ----------------------------------------------------------
# Period of the dispatcher beat entry; an edited schedule takes effect at its next tick.
SCHEDULE_DISPATCH_INTERVAL_SECONDS = env_int("SCHEDULE_DISPATCH_INTERVAL_SECONDS", 2)
# Schedules locked and fired per transaction (several per tick when more are due).
SCHEDULE_DISPATCH_BATCH = env_int("SCHEDULE_DISPATCH_BATCH", 1000)
# A fire time older than this when dispatched counts as missed (catch-up policy applies).
SCHEDULE_MISFIRE_GRACE_SECONDS = env_int("SCHEDULE_MISFIRE_GRACE_SECONDS", 60)
# Fire times of one schedule handled per batch after a long downtime (the rest: next batch).
SCHEDULE_MAX_FIRES_PER_TICK = env_int("SCHEDULE_MAX_FIRES_PER_TICK", 1000)

CELERY_BEAT_SCHEDULE = {
    "megahub.tasks_release_due": {
        "task": "megahub.tasks_release_due",
        "schedule": float(TASK_RELEASE_INTERVAL_SECONDS),
    },
    "megahub.tasks_sweep": {
        "task": "megahub.tasks_sweep",
        "schedule": float(TASK_SWEEP_INTERVAL_SECONDS),
    },
    "megahub.events_relay": {
        "task": "megahub.events_relay",
        "schedule": float(EVENTS_RELAY_INTERVAL_SECONDS),
    },
    "megahub.webhooks_deliver_due": {
        "task": "megahub.webhooks_deliver_due",
        "schedule": float(WEBHOOK_DELIVER_INTERVAL_SECONDS),
    },
    "megahub.checkpoints_prune": {
        "task": "megahub.checkpoints_prune",
        "schedule": float(JOB_CHECKPOINT_PRUNE_INTERVAL_SECONDS),
    },
    "megahub.schedules_dispatch_due": {
        "task": "megahub.schedules_dispatch_due",
        "schedule": float(SCHEDULE_DISPATCH_INTERVAL_SECONDS),
    },
}

# --- Monitoring (task_monitoring) ----------------------------------------------------------
# Workers write a heartbeat row this often; one silent for WORKER_OFFLINE_AFTER_SECONDS is
# shown offline (its running tasks are rescued by the task sweeper, not here).
WORKER_HEARTBEAT_SECONDS = env_int("WORKER_HEARTBEAT_SECONDS", 10)
WORKER_OFFLINE_AFTER_SECONDS = env_int("WORKER_OFFLINE_AFTER_SECONDS", 3 * WORKER_HEARTBEAT_SECONDS)
ALERT_EVALUATION_INTERVAL_SECONDS = env_int("ALERT_EVALUATION_INTERVAL_SECONDS", 30)
ALERT_DELIVERY_INTERVAL_SECONDS = env_int("ALERT_DELIVERY_INTERVAL_SECONDS", 10)
ALERT_EVALUATION_RETENTION_DAYS = env_int("ALERT_EVALUATION_RETENTION_DAYS", 30)
# Workers silent this long are forgotten (autoscaled or renamed hosts do not pile up).
WORKER_FORGET_AFTER_DAYS = env_int("WORKER_FORGET_AFTER_DAYS", 7)
# Webhook/email deliveries: per-attempt timeout, attempts before giving up, backoff.
ALERT_WEBHOOK_TIMEOUT_SECONDS = env_int("ALERT_WEBHOOK_TIMEOUT_SECONDS", 5)
ALERT_NOTIFICATION_MAX_ATTEMPTS = env_int("ALERT_NOTIFICATION_MAX_ATTEMPTS", 5)
ALERT_NOTIFICATION_BACKOFF_SECONDS = env_int("ALERT_NOTIFICATION_BACKOFF_SECONDS", 10)
ALERT_NOTIFICATION_BACKOFF_MAX_SECONDS = env_int("ALERT_NOTIFICATION_BACKOFF_MAX_SECONDS", 600)
# GET /metrics (Prometheus) wants "Authorization: Bearer <METRICS_TOKEN>"; with no token set
# it answers 403 unless METRICS_ALLOW_ANONYMOUS=1 (a scrape network you trust).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOW_ANONYMOUS = env_bool("METRICS_ALLOW_ANONYMOUS", False)
# Alert e-mails go through Django's mail backend (console by default when DEBUG is on).
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "megahub@localhost")

CELERY_BEAT_SCHEDULE.update(
    {
        "megahub.alert_rules_evaluate": {
            "task": "megahub.alert_rules_evaluate",
            "schedule": float(ALERT_EVALUATION_INTERVAL_SECONDS),
        },
        "megahub.alert_notifications_deliver": {
            "task": "megahub.alert_notifications_deliver",
            "schedule": float(ALERT_DELIVERY_INTERVAL_SECONDS),
        },
        "megahub.monitoring_prune": {
            "task": "megahub.monitoring_prune",
            "schedule": 3600.0,
        },
    }
)

# --- Logging ------------------------------------------------------------------------------
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "megahub.logging.JsonFormatter"},
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(context)s",
            "()": "megahub.logging.TextFormatter",
        },
    },
    # Celery's per-message INFO lines for the platform's ticks are demoted to DEBUG.
    "filters": {"platform_ticks": {"()": "megahub.logging.PlatformTicksAtDebug"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["platform_ticks"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "celery": {"level": LOG_LEVEL},
    },
}

# --- Error reporting (optional) -----------------------------------------------------------
# With SENTRY_DSN set, errors of the web and the workers go to Sentry (megahub/sentry.py: Django
# and Celery integrations, brand and task type as tags, no PII, bodies or tokens); without it
# sentry_sdk is not even imported.
SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
if SENTRY_DSN:
    from megahub import sentry

    sentry.init(
        SENTRY_DSN,
        environment=os.environ.get("SENTRY_ENVIRONMENT") or None,
        release=os.environ.get("SENTRY_RELEASE") or None,
    )
