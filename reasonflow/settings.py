"""Settings for ReasonFlow Notify, read from the environment (see `.env.example`).

Defaults run the service embedded: SQLite file, in-memory channel layer, DEBUG on.
Production sets DATABASE_URL (PostgreSQL) and REDIS_URL.
"""

import os
import re
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from reasonflow.safety import signing_key

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate ("10/min": at least 1 per s, sec, m, min, h, hour, d or day)."""
    value = os.environ.get(name, "").strip() or default
    if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(f"{name} must be a rate such as 10/min, not {value!r}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)
# With DEBUG off a missing, short or committed key stops start-up (reasonflow/safety.py).
SECRET_KEY = signing_key("SECRET_KEY", os.environ.get("SECRET_KEY"), debug=DEBUG)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])

# HTTPS (docs/production.md): cookies are secure-only unless DEBUG is on; redirects and HSTS
# are the TLS proxy's choice, so production turns them on explicitly. Probes answer over plain
# HTTP on the process's own port.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_tasks",
    "django_tasks_db",
    "channels",
    "reasonflow.users",
    "reasonflow.console",
    "notifications",
    "emails",
]

MIDDLEWARE = [
    "reasonflow.middleware.ReleaseRequestCycles",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "reasonflow.urls"
ASGI_APPLICATION = "reasonflow.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 60)  # without the pool
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=DATABASE_CONN_MAX_AGE,
        conn_health_checks=True,
    )
}
# PostgreSQL connections come from a psycopg pool per process (docs/production.md): under ASGI
# each request's sync code runs in a thread of its own, so a persistent connection could not
# outlive the request and every request paid for a new PostgreSQL session. Django hands the
# connection back to the pool when it closes it, at the end of each request and of each
# realtime read; the pool is never larger than DATABASE_POOL_MAX_SIZE, and a request that finds
# it empty waits up to DATABASE_POOL_TIMEOUT seconds for a connection (then fails with a 500).
DATABASE_POOL = env_bool("DATABASE_POOL", True)
DATABASE_POOL_MIN_SIZE = env_int("DATABASE_POOL_MIN_SIZE", 2)
# The default covers the realtime reads' threads (NOTIFICATIONS_READ_THREADS, each keeping one
# connection) plus as many requests at once as two cores can usefully serve.
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 16)
NOTIFICATIONS_READ_THREADS = env_int("NOTIFICATIONS_READ_THREADS", 4)
DATABASE_POOL_TIMEOUT = float(os.environ.get("DATABASE_POOL_TIMEOUT", "10"))
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(DATABASE_POOL_MIN_SIZE, DATABASE_POOL_MAX_SIZE),
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": DATABASE_POOL_TIMEOUT,
    }
    # Pooling takes the place of persistent connections (Django refuses both): closing a
    # connection returns it to the pool. With CONN_HEALTH_CHECKS the pool checks a connection
    # before handing it out, so none that a database restart ended reaches a request (with
    # reasonflow/db/pool.py's check, which costs no round trip).
    DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several threads (daphne's sync workers, the test suite) write the same file: wait for
    # the lock instead of failing at once, and take it at BEGIN so an event-id upsert
    # never has to upgrade a read lock.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not shared-cache memory (its table locks ignore the timeout), one per test run.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"reasonflow-test-{os.getpid()}.sqlite3")
    }

# Django's backends plus a before-commit hook: a transaction's events are stored just before it
# commits, in user order, so producers never deadlock on the per-user counters
# (docs/publishing.md). publish_event refuses to run on Django's plain backends.
PROJECT_ENGINES = {
    "django.db.backends.postgresql": "reasonflow.db.backends.postgresql",
    "django.db.backends.sqlite3": "reasonflow.db.backends.sqlite3",
}
DATABASES["default"]["ENGINE"] = PROJECT_ENGINES.get(
    DATABASES["default"]["ENGINE"], DATABASES["default"]["ENGINE"]
)

AUTH_USER_MODEL = "users.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The JavaScript client keeps its URL, /static/notifications/client.js, from its own folder.
STATICFILES_DIRS = [("notifications", BASE_DIR / "notifications" / "clients" / "js")]

# --- Request bodies: larger ones get 413 before they are read whole (reasonflow/asgi.py) ---
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "reasonflow.users.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["reasonflow.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["reasonflow.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "reasonflow.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    # The client address of a throttle is REMOTE_ADDR: the server sets it from X-Forwarded-For
    # of trusted proxies only (FORWARDED_ALLOW_IPS). DRF's default (None) trusts any client's.
    "NUM_PROXIES": 0,
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_ACCESS_LIFETIME_SECONDS", 15 * 60)),
    "REFRESH_TOKEN_LIFETIME": timedelta(
        seconds=env_int("JWT_REFRESH_LIFETIME_SECONDS", 7 * 24 * 3600)
    ),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": signing_key(
        "JWT_SIGNING_KEY", os.environ.get("JWT_SIGNING_KEY"), debug=DEBUG, default=SECRET_KEY
    ),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    # A password change invalidates every token issued before it (simplejwt compares a hash).
    "CHECK_REVOKE_TOKEN": True,
    "AUTH_HEADER_TYPES": ("Bearer",),
    # Token classes that refuse claims of the wrong type (401 / 4002, never a 500).
    "AUTH_TOKEN_CLASSES": ("reasonflow.users.tokens.AccessToken",),
}

# --- Auth throttles (reasonflow/users/throttles.py), counted in CACHES below ------------------
# Failed logins per account (email) and, separately, per client address; once either is over
# the rate, logins answer 429 before any password is checked.
THROTTLE_RATE_LOGIN = env_rate("THROTTLE_RATE_LOGIN", "10/min")
# Registration attempts per client address.
THROTTLE_RATE_REGISTER = env_rate("THROTTLE_RATE_REGISTER", "20/hour")
# Wrong current passwords per user on a password change.
THROTTLE_RATE_PASSWORD = env_rate("THROTTLE_RATE_PASSWORD", "10/hour")
# Refreshes per client address.
THROTTLE_RATE_REFRESH = env_rate("THROTTLE_RATE_REFRESH", "60/min")

# --- Channel layer --------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "").strip()
# Sentinel: REDIS_SENTINELS=host:26379,host2:26379 and REDIS_SENTINEL_MASTER=mymaster.
REDIS_SENTINELS = env_list("REDIS_SENTINELS", [])
REDIS_SENTINEL_MASTER = os.environ.get("REDIS_SENTINEL_MASTER", "mymaster")
# "pubsub" (default, chosen by measurement: docs/performance.md): channels-redis's Redis pub/sub
# layer, at-most-once, made lossless by the event store, gap fill and the delivery watch.
# "core": its list-based layer.
CHANNEL_LAYER = os.environ.get("CHANNEL_LAYER", "pubsub").strip().lower()


def redis_layer_host() -> dict:
    """One channels-redis `hosts` entry from REDIS_URL or the Sentinel settings."""
    host: dict = {
        # redis-py 8's 5 s default equals channels-redis's 5 s blocking read, which crashed
        # idle consumers at random (channels_redis#422).
        "socket_timeout": env_int("REDIS_SOCKET_TIMEOUT", 15),
        "socket_connect_timeout": env_int("REDIS_CONNECT_TIMEOUT", 3),
    }
    if REDIS_SENTINELS:
        host["sentinels"] = [
            (name.rsplit(":", 1)[0], int(name.rsplit(":", 1)[1])) for name in REDIS_SENTINELS
        ]
        host["master_name"] = REDIS_SENTINEL_MASTER
        host["sentinel_kwargs"] = {"socket_timeout": host["socket_connect_timeout"]}
    else:
        host["address"] = REDIS_URL
    if CHANNEL_LAYER == "core":
        # The core layer's pool waits for a free connection instead of failing past its size.
        host["max_connections"] = env_int("REDIS_MAX_CONNECTIONS", 200)
        if not REDIS_SENTINELS:
            host["timeout"] = env_int("REDIS_POOL_TIMEOUT", 10)
    return host


if (REDIS_URL or REDIS_SENTINELS) and CHANNEL_LAYER == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "notifications.realtime.layers.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_layer_host()]},
        }
    }
elif REDIS_URL or REDIS_SENTINELS:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "notifications.realtime.layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [redis_layer_host()],
                "capacity": env_int("CHANNEL_LAYER_CAPACITY", 1000),
                "expiry": 60,
                # Members of a crashed process vanish after this; live sockets re-join every
                # NOTIFICATIONS_GROUP_REFRESH seconds, well inside it.
                "group_expiry": env_int("CHANNEL_LAYER_GROUP_EXPIRY", 300),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": env_int("CHANNEL_LAYER_CAPACITY", 1000)},
        }
    }

# --- Cache: the auth throttles' counts, shared by every server process through Redis ---------
if REDIS_URL or REDIS_SENTINELS:
    CACHE_OPTIONS: dict = {
        # A cache read is quick; a Redis that hangs makes the auth endpoints answer 503 in
        # seconds rather than hold the request.
        "socket_timeout": 5,
        "socket_connect_timeout": env_int("REDIS_CONNECT_TIMEOUT", 3),
    }
    if REDIS_SENTINELS:
        # Django's RedisCache has no Sentinel support: this pool finds the master through it.
        CACHE_OPTIONS.update(
            pool_class="reasonflow.cache.SentinelMasterPool",
            sentinels=redis_layer_host()["sentinels"],
            service_name=REDIS_SENTINEL_MASTER,
        )
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            # With Sentinel the master's address comes from the Sentinels, not from here.
            "LOCATION": REDIS_URL if not REDIS_SENTINELS else f"redis://{REDIS_SENTINEL_MASTER}",
            "KEY_PREFIX": "reasonflow",
            "OPTIONS": CACHE_OPTIONS,
        }
    }
else:
    # Per process: with several server processes and no Redis, each counts on its own.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Notifications ---------------------------------------------------------------------------
NOTIFICATIONS_AUTH_TIMEOUT = float(os.environ.get("NOTIFICATIONS_AUTH_TIMEOUT", "10"))
NOTIFICATIONS_RETENTION = timedelta(
    seconds=env_int("NOTIFICATIONS_RETENTION_SECONDS", 7 * 24 * 3600)
)
NOTIFICATIONS_MAX_FRAME_BYTES = env_int("NOTIFICATIONS_MAX_FRAME_BYTES", 64 * 1024)
NOTIFICATIONS_TOKEN_EXPIRY_WARNING = env_int("NOTIFICATIONS_TOKEN_EXPIRY_WARNING_SECONDS", 60)
NOTIFICATIONS_ALLOWED_ORIGINS = env_list("NOTIFICATIONS_ALLOWED_ORIGINS", [])
NOTIFICATIONS_REPLAY_BATCH = env_int("NOTIFICATIONS_REPLAY_BATCH", 500)
NOTIFICATIONS_MAX_PENDING = env_int("NOTIFICATIONS_MAX_PENDING", 1000)
NOTIFICATIONS_MAX_CONNECTIONS_PER_USER = env_int("NOTIFICATIONS_MAX_CONNECTIONS_PER_USER", 20)
NOTIFICATIONS_RATE_LIMIT = float(os.environ.get("NOTIFICATIONS_RATE_LIMIT", "5"))
NOTIFICATIONS_RATE_BURST = env_int("NOTIFICATIONS_RATE_BURST", 20)
NOTIFICATIONS_SEND_TIMEOUT = float(os.environ.get("NOTIFICATIONS_SEND_TIMEOUT", "10"))
NOTIFICATIONS_GROUP_REFRESH = float(os.environ.get("NOTIFICATIONS_GROUP_REFRESH", "60"))
NOTIFICATIONS_CATCHUP_INTERVAL = float(os.environ.get("NOTIFICATIONS_CATCHUP_INTERVAL", "5"))
# Seconds a connecting socket's database read waits for others to share it while the previous
# read is still under way (realtime/database.py); 0 sends each batch at once.
NOTIFICATIONS_READ_BATCH_WINDOW = float(os.environ.get("NOTIFICATIONS_READ_BATCH_WINDOW", "0.006"))
NOTIFICATIONS_SHUTDOWN_GRACE = float(os.environ.get("NOTIFICATIONS_SHUTDOWN_GRACE", "5"))
# A killed process's sockets leave every presence count within this many seconds.
NOTIFICATIONS_PRESENCE_TTL = float(os.environ.get("NOTIFICATIONS_PRESENCE_TTL", "45"))
# Server-sent events (PROTOCOL §5): a ticket opens a stream within this many seconds (at most
# 60); an idle stream gets a `: ping` comment this often (at most 15), so proxies keep it.
NOTIFICATIONS_SSE_TICKET_TTL = min(
    60.0, float(os.environ.get("NOTIFICATIONS_SSE_TICKET_TTL", "30"))
)
NOTIFICATIONS_SSE_PING_INTERVAL = min(
    15.0, float(os.environ.get("NOTIFICATIONS_SSE_PING_INTERVAL", "15"))
)
# /readyz gives up on the database or the channel layer after this many seconds.
NOTIFICATIONS_READY_TIMEOUT = float(os.environ.get("NOTIFICATIONS_READY_TIMEOUT", "2"))

# --- Notifications: the publish API (PROTOCOL §6) -------------------------------------------
# Requests per service key (each carries one event or a batch of up to 500), counted in the
# cache (Redis when set, so shared by every server process); over it, 429 with Retry-After.
NOTIFICATIONS_PUBLISH_RATE = env_rate("NOTIFICATIONS_PUBLISH_RATE", "100/s")

# --- Notifications: per-client limits -------------------------------------------------------
# The client is the peer's address, or what X-Forwarded-For says when the peer is one of the
# proxies in FORWARDED_ALLOW_IPS (comma-separated addresses or networks, "*" for any; uvicorn's
# rule: the right-most entry that is not itself a trusted proxy). Empty (the default): no
# proxy is trusted and the header is ignored. IPv6 clients count per /64. 0 turns a limit off.
FORWARDED_ALLOW_IPS = os.environ.get("FORWARDED_ALLOW_IPS", "").strip()
NOTIFICATIONS_MAX_PENDING_PER_IP = env_int("NOTIFICATIONS_MAX_PENDING_PER_IP", 50)
NOTIFICATIONS_CONNECT_RATE_PER_IP = float(os.environ.get("NOTIFICATIONS_CONNECT_RATE_PER_IP", "20"))
NOTIFICATIONS_CONNECT_BURST_PER_IP = env_int("NOTIFICATIONS_CONNECT_BURST_PER_IP", 100)

# --- Operations: /metrics access (a Bearer token, or a client address in the allowlist) -------
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", ["127.0.0.1/32", "::1/128"])

# --- Emails domain -------------------------------------------------------------------------
# Where sync reads mail unless a user's MailAccount names another source: `demo:`,
# `mbox:///path/file.mbox`, `maildir:///path/Maildir`, `imaps://user:app-password@host/INBOX`
# (implicit TLS) or `imap://…` (STARTTLS). See docs/emails.md, "Mail sources".
EMAILS_SOURCE = os.environ.get("EMAILS_SOURCE", "demo:")
EMAILS_SOURCE_TIMEOUT = float(os.environ.get("EMAILS_SOURCE_TIMEOUT", "30"))
EMAILS_DEMO_PER_SYNC = env_int("EMAILS_DEMO_PER_SYNC", 3)
EMAILS_SYNC_LIMIT = env_int("EMAILS_SYNC_LIMIT", 100)
EMAILS_BATCH_MAX_IDS = env_int("EMAILS_BATCH_MAX_IDS", 100)
EMAILS_BATCH_PROGRESS_INTERVAL = 0.25  # seconds: at most ~4 batch_progress events per second
EMAILS_CLASSIFIER = os.environ.get("EMAILS_CLASSIFIER", "emails.classifier.RuleClassifier")
EMAILS_REPLY_FROM = os.environ.get("EMAILS_REPLY_FROM", "")  # empty: the user's own address
EMAILS_SIGNATURE = os.environ.get("EMAILS_SIGNATURE", "The ReasonFlow team")

# Replies go out through Django's email framework: console in dev, SMTP when EMAIL_HOST is set.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", EMAIL_PORT == 587)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", EMAIL_PORT == 465)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "ReasonFlow <noreply@reasonflow.local>")

# Background jobs (Django's tasks API). `immediate` runs a job in the process that enqueued
# it, so the embedded default needs no worker; `database` stores jobs for `manage.py db_worker`.
TASKS_BACKEND = os.environ.get("TASKS_BACKEND", "immediate")
TASKS = {
    "default": {
        "BACKEND": {
            "immediate": "django_tasks.backends.immediate.ImmediateBackend",
            "database": "django_tasks_db.DatabaseBackend",
        }[TASKS_BACKEND]
    }
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ReasonFlow Notify API",
    "DESCRIPTION": "Emails, drafts, batch jobs and the notification event history.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # The docs UI's assets are served from this app (sidecar), not fetched from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "EmailStatusEnum": "emails.models.EmailStatus",
        "DraftStatusEnum": "emails.models.DraftStatus",
        "BatchStatusEnum": "emails.models.BatchStatus",
    },
}

# --- Logging ---------------------------------------------------------------------------------
# LOG_FORMAT=json: one JSON object per line (notifications/operations/logs.py). Tokens are redacted.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain").strip().lower()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "notifications.operations.logs.RedactingFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "notifications.operations.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}},
}
