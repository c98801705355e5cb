"""Settings come only from the environment (django-environ).

`EXCHANGE_ENV=development` (the default) gives local defaults for every service so that `make run`
works with nothing configured. `EXCHANGE_ENV=production` removes every default that carries a secret
or an address: a missing value stops the process at start instead of running against the wrong thing.
"""

import os
import secrets
import time
from datetime import timedelta
from pathlib import Path

import environ
import structlog
from django.core.exceptions import ImproperlyConfigured

from core.kafka.security import connection_options

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = Path(environ.Env().str("EXCHANGE_RUN_DIR", default=str(BASE_DIR / ".run")))

env = environ.Env()

EXCHANGE_ENV = env.str("EXCHANGE_ENV", default="development")
if EXCHANGE_ENV not in {"development", "production"}:
    raise ImproperlyConfigured(f"EXCHANGE_ENV must be 'development' or 'production', not {EXCHANGE_ENV!r}")
PRODUCTION = EXCHANGE_ENV == "production"


def local_default(value):
    """A development default, or none at all in production."""
    return environ.Env.NOTSET if PRODUCTION else value


def run_secret(name: str) -> str:
    """A development secret kept under the run folder: made (mode 0600) by the first process that
    needs it, then read by every other, so the API and the processes that call it agree."""
    path = RUN_DIR / name
    for _ in range(50):
        try:
            RUN_DIR.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            value = path.read_text().strip()
            if value:
                return value
            time.sleep(0.02)  # another process is writing it
            continue
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def secret_setting(variable: str, run_name: str) -> str:
    """A secret from the environment: required in production, and in development made once per
    checkout under the run folder (`run_name`), so that no secret is ever a constant of the code."""
    value = env.str(variable, default="")
    if value:
        return value
    if PRODUCTION:
        raise ImproperlyConfigured(f"{variable} is required in production")
    return run_secret(run_name)


# The port the API (gunicorn, the `api` line of the Procfile) listens on, on 127.0.0.1.
PORT = env.int("PORT", default=8000)

# Which long-running process this is (api, engine, settlement, celery, beat); shows up in
# PostgreSQL's pg_stat_activity and in the logs.
EXCHANGE_PROCESS = env.str("EXCHANGE_PROCESS", default="manage")

# Required in production; in development each checkout makes its own under the run folder, so no key
# that signs sessions or tokens is ever written in the code.
SECRET_KEY = secret_setting("DJANGO_SECRET_KEY", "secret-key")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
if DEBUG and PRODUCTION:
    # Debug pages show settings, SQL and tracebacks to whoever triggers an error.
    raise ImproperlyConfigured("DJANGO_DEBUG must be off with EXCHANGE_ENV=production")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=local_default(["127.0.0.1", "localhost", "testserver"]))
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "exchange.apps.ExchangeAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "pgtrigger",
    "console.apps.ChangeHistoryConfig",
    "pghistory.admin",
    "django_otp",
    "console.apps.SecondFactorsConfig",
    "console.apps.SignInRecordsConfig",
    "accounts",
    "matching",
    "settlement",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "exchange.middleware.AdminHistoryMiddleware",
    "exchange.middleware.DatabaseUnavailableMiddleware",
    # Last, as django-axes requires: it turns a login it refused into the lock-out page.
    "axes.middleware.AxesMiddleware",
]

# History (django-pghistory) of the rules operators change: assets, markets, restrictions and staff
# permissions. Its event tables are append-only, like the ledger and the audit log.
PGHISTORY_APPEND_ONLY = True
PGHISTORY_ADMIN_ALL_EVENTS = True

ROOT_URLCONF = "exchange.urls"

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
            ],
        },
    },
]

WSGI_APPLICATION = "exchange.wsgi.application"

# The URL itself is kept too: exchange/stack.py creates the database it names before Django starts.
DATABASE_URL = env.str("DATABASE_URL", default=local_default("postgres://postgres@127.0.0.1:5432/exchange"))
DATABASES = {"default": environ.Env.db_url_config(DATABASE_URL)}
DATABASES["default"].setdefault("OPTIONS", {})
DATABASES["default"]["OPTIONS"].setdefault("application_name", f"exchange-{EXCHANGE_PROCESS}")
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5))
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The hot paths' fixed statements (core.sql.cursor) are prepared once per connection, after which
# PostgreSQL runs them from their plan. Off for a proxy that pools by transaction and cannot keep a
# session's prepared statements (PgBouncer before 1.21, or without max_prepared_statements). The ORM's
# own statements are bound client-side and never prepared, whatever this says.
DATABASES["default"]["OPTIONS"]["prepare_threshold"] = (
    5 if env.bool("DATABASE_PREPARED_STATEMENTS", default=True) else None
)
DATABASES["default"].setdefault("TEST", {})["NAME"] = env.str("DATABASE_TEST_NAME", default=None)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # Not a rule: Django tells every validator of a new password, and this one ends the user's logins.
    {"NAME": "accounts.passwords.LoginsEndOnPasswordChange"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Front-end packages from npm (`make install` runs `npm ci`), served like the project's own files.
STATICFILES_DIRS = [("vendor/chart.js", BASE_DIR / "node_modules" / "chart.js" / "dist")]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Services -------------------------------------------------------------------------------------

REDIS_URL = env.str("REDIS_URL", default=local_default("redis://127.0.0.1:6379/0"))
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="exchange")
CACHES = {
    "default": {
        # Django's RedisCache with JSON instead of pickle: nothing read back from Redis is unpickled.
        "BACKEND": "core.cache.JSONRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": CACHE_KEY_PREFIX,
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=local_default(REDIS_URL))
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="exchange")
CELERY_TASK_IGNORE_RESULT = True
# A task is acknowledged only once it has run, and a worker killed mid-task gives it back: every task
# is idempotent, so running one twice is safe while losing one is not.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CONCURRENCY = env.int("CELERY_CONCURRENCY", default=2)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fix-up closes the database connection before and after every task unless this is
# set (then only every this many tasks): a new PostgreSQL backend for every settlement task cost
# more CPU than the task. exchange/celery.py gives tasks Django's own CONN_MAX_AGE and health checks.
CELERY_DB_REUSE_MAX = 1000
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=300)}
# JSON only, for tasks, results and events alike: a worker refuses a pickled message rather than
# running whatever it would unpickle into.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_EVENT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
# Keep the project's logging (structured, one format for every process) instead of Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(RUN_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "settle-markets-with-backlog": {
        "task": "settlement.tasks.settle_backlog",
        "schedule": env.float("SETTLE_SWEEP_SECONDS", default=5.0),
    },
    "reconcile": {
        "task": "settlement.tasks.reconcile",
        "schedule": env.float("RECONCILE_SECONDS", default=60.0),
    },
    "reconcile-full": {
        "task": "settlement.tasks.reconcile_full",
        "schedule": env.float("RECONCILE_FULL_SECONDS", default=86400.0),
    },
    "expire-idempotency-keys": {
        "task": "accounts.tasks.idempotency_keys_expire",
        "schedule": 3600.0,
    },
    "flush-expired-tokens": {
        "task": "accounts.tasks.tokens_flush_expired",
        "schedule": env.float("TOKEN_FLUSH_SECONDS", default=3600.0),
    },
}
for _name, _entry in CELERY_BEAT_SCHEDULE.items():
    if _entry["schedule"] <= 0:
        raise ImproperlyConfigured(f"The schedule of beat's {_name!r} must be a positive number of seconds.")

# Every Kafka setting lives here; core/kafka/client.py is the only reader.
KAFKA = {
    "BOOTSTRAP_SERVERS": env.list("KAFKA_BOOTSTRAP_SERVERS", default=local_default(["127.0.0.1:9092"])),
    # SASL and TLS for every producer, consumer and admin client (KAFKA_SECURITY_PROTOCOL and the
    # rest; SASL_SSL only in production unless KAFKA_ALLOW_INSECURE): see core/kafka/security.py.
    "SECURITY": connection_options(os.environ, production=PRODUCTION),
    "TOPIC_PREFIX": env.str("KAFKA_TOPIC_PREFIX", default=""),
    "PARTITIONS": {
        "orders": env.int("KAFKA_ORDERS_PARTITIONS", default=3),
        "engine-events": env.int("KAFKA_EVENTS_PARTITIONS", default=3),
    },
    "REPLICATION_FACTOR": env.int("KAFKA_REPLICATION_FACTOR", default=1),
    # How long the topics keep a message (their retention.ms, set at creation and kept in step by
    # `ensure_topics`). Unset in production: the cluster's own policy. The development default is
    # set below, with the snapshot interval it depends on.
    "RETENTION_MS": env.int("KAFKA_RETENTION_MS", default=None),
    "PRODUCER": {
        "acks": "all",
        "retries": 5,
        "linger_ms": env.int("KAFKA_LINGER_MS", default=2),
        "request_timeout_ms": env.int("KAFKA_REQUEST_TIMEOUT_MS", default=10_000),
        "max_block_ms": env.int("KAFKA_MAX_BLOCK_MS", default=5_000),
        # How long building a producer may wait for the first broker; kafka-python's own default
        # (30 s) would hold a request or a relay pass that long while the broker is away.
        "bootstrap_timeout_ms": env.int("KAFKA_BOOTSTRAP_TIMEOUT_MS", default=5_000),
        "max_in_flight_requests_per_connection": 1,
        # kafka-python's own sensors, which nothing here reads (the exchange's metrics are its
        # own): they cost a few calls on every send.
        "metrics_enabled": False,
    },
    "CONSUMER": {
        "enable_auto_commit": False,
        "max_poll_records": env.int("KAFKA_MAX_POLL_RECORDS", default=500),
        "request_timeout_ms": env.int("KAFKA_CONSUMER_REQUEST_TIMEOUT_MS", default=30_000),
        # How long the broker may hold a fetch that finds nothing (kafka-python's and Kafka's default
        # is 500). The development broker answers at once whatever this says.
        "fetch_max_wait_ms": env.int("KAFKA_FETCH_MAX_WAIT_MS", default=500 if PRODUCTION else 50),
        "bootstrap_timeout_ms": env.int("KAFKA_BOOTSTRAP_TIMEOUT_MS", default=5_000),
        "metrics_enabled": False,
    },
    # How the matching worker and the settlement consumer wait for messages (core.kafka.client.Poller):
    # 0 polls without blocking and sleeps between empty polls, for the development broker, which
    # answers an empty fetch at once; above 0 blocks in `poll` up to that many milliseconds, for a
    # Kafka cluster, which holds an empty fetch until a message comes.
    "POLL_WAIT_MS": env.int("KAFKA_POLL_WAIT_MS", default=100 if PRODUCTION else 0),
    # Seconds the outbox relay waits for the broker to acknowledge a batch before sending the rest again.
    "PUBLISH_TIMEOUT": env.float("KAFKA_PUBLISH_TIMEOUT", default=2.0),
}

# Matching worker: which partitions of the orders topic this worker owns (empty: all of them) and
# how often it writes a snapshot of its books.
ENGINE_PARTITIONS = env.list("ENGINE_PARTITIONS", cast=int, default=[])
ENGINE_SNAPSHOT_SECONDS = env.float("ENGINE_SNAPSHOT_SECONDS", default=30.0)
# A restart replays the orders topic from the last snapshot, and a lost event is refilled from one
# of the three newest: the topic must keep at least three snapshot intervals of input. In
# development an hour, or ten intervals if that is longer: the development broker's CPU grows with
# everything it holds.
if KAFKA["RETENTION_MS"] is None and not PRODUCTION:
    KAFKA["RETENTION_MS"] = max(3_600_000, int(10_000 * ENGINE_SNAPSHOT_SECONDS))
if KAFKA["RETENTION_MS"] is not None and KAFKA["RETENTION_MS"] < max(300_000, 3_000 * ENGINE_SNAPSHOT_SECONDS):
    raise ImproperlyConfigured(
        "KAFKA_RETENTION_MS must be at least 5 minutes and at least three ENGINE_SNAPSHOT_SECONDS."
    )
ENGINE_SNAPSHOT_COMMANDS = env.int("ENGINE_SNAPSHOT_COMMANDS", default=50_000)
# The matching worker rewinds itself when settlement of one of its markets has waited this long for an
# event the worker emitted but settlement never received (lost by the broker); 0 turns that off.
ENGINE_GAP_REWIND_SECONDS = env.float("ENGINE_GAP_REWIND_SECONDS", default=10.0)
ENGINE_DEPTH_LEVELS = env.int("ENGINE_DEPTH_LEVELS", default=50)

# --- Custody ---------------------------------------------------------------------------------------

# Custody signs its webhooks with this secret (HMAC-SHA256). Several, comma-separated, while rotating:
# any of them is accepted, and the custody simulator signs with the first.
CUSTODY_WEBHOOK_SECRETS = env.list("CUSTODY_WEBHOOK_SECRET", default=[]) or [
    secret_setting("CUSTODY_WEBHOOK_SECRET", "custody-webhook-secret")
]
# How far a webhook's signed timestamp may be from now, either way.
CUSTODY_SIGNATURE_TOLERANCE_SECONDS = env.int("CUSTODY_SIGNATURE_TOLERANCE_SECONDS", default=300)
# Issues deposit addresses: a class with `address_for(*, user_id, asset)`.
CUSTODY_ADAPTER = env.str("CUSTODY_ADAPTER", default=local_default("accounts.custody.DevelopmentCustody"))
# The development custody simulator (never in production): which API it calls, how long a block is.
CUSTODY_SIMULATOR_API = env.str("CUSTODY_SIMULATOR_API", default=f"http://127.0.0.1:{PORT}/api/")
CUSTODY_SIMULATOR_BLOCK_SECONDS = env.float("CUSTODY_SIMULATOR_BLOCK_SECONDS", default=1.0)

SETTLEMENT_BATCH_SIZE = env.int("SETTLEMENT_BATCH_SIZE", default=500)
# An order still pending after this many seconds is published again by the relay; the engine drops
# the copy if it already has the order.
OUTBOX_RETRY_SECONDS = env.float("OUTBOX_RETRY_SECONDS", default=5.0)
# The outbox relay (`run_outbox_relay`): the most rows it publishes as one batch.
OUTBOX_BATCH_SIZE = env.int("OUTBOX_BATCH_SIZE", default=500)
if OUTBOX_BATCH_SIZE < 1:
    raise ImproperlyConfigured("OUTBOX_BATCH_SIZE must be at least 1.")
# How often the relay looks for new outbox rows once it has published everything (one index-only
# statement); the most it adds to an order's way to the engine when the exchange is quiet.
OUTBOX_POLL_SECONDS = env.float("OUTBOX_POLL_SECONDS", default=0.01)
if not 0 < OUTBOX_POLL_SECONDS <= 1:
    raise ImproperlyConfigured("OUTBOX_POLL_SECONDS must be more than 0 and at most 1.")
# New orders are refused (503 `overloaded`) while more than this many wait behind the API, accepted
# and not yet confirmed by settlement (core.throttling.BacklogThrottle); the relay counts them.
MAX_PENDING_ORDERS = env.int("MAX_PENDING_ORDERS", default=5000)
if MAX_PENDING_ORDERS < 1:
    raise ImproperlyConfigured("MAX_PENDING_ORDERS must be at least 1.")
# Live orders (pending, open, partially filled) one user may hold; one more is 409
# `too_many_open_orders`. Each resting order costs the engine's memory and every snapshot.
MAX_OPEN_ORDERS_PER_USER = env.int("MAX_OPEN_ORDERS_PER_USER", default=200)
if MAX_OPEN_ORDERS_PER_USER < 1:
    raise ImproperlyConfigured("MAX_OPEN_ORDERS_PER_USER must be at least 1.")
# A gap in an engine event sequence older than this raises an alert (younger ones are usually just
# events still in flight between the settlement consumer's batches).
SETTLEMENT_GAP_ALERT_SECONDS = env.float("SETTLEMENT_GAP_ALERT_SECONDS", default=30.0)

# --- API ------------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.tokens.LoginAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "core.api.AutoSchema",
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "core.throttling.AnonRateThrottle",
        "core.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("THROTTLE_ANON", default="120/minute"),
        "user": env.str("THROTTLE_USER", default="1200/minute"),
        "orders": env.str("THROTTLE_ORDERS", default="600/minute"),
        "auth": env.str("THROTTLE_AUTH", default="30/minute"),
    },
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": None,
}

# Tokens belong to a login (accounts/tokens.py): refresh tokens rotate, the one used is blacklisted,
# and none lives past JWT_LOGIN_LIFETIME after the sign-in with a password, however often refreshed.
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env.int("JWT_ACCESS_SECONDS", default=300)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env.int("JWT_REFRESH_SECONDS", default=86_400)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
}
JWT_LOGIN_LIFETIME = timedelta(seconds=env.int("JWT_LOGIN_SECONDS", default=7 * 86_400))
if SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"] > JWT_LOGIN_LIFETIME:
    raise ImproperlyConfigured("JWT_LOGIN_SECONDS must not be shorter than JWT_ACCESS_SECONDS")

SPECTACULAR_SETTINGS = {
    "TITLE": "Exchange API",
    "DESCRIPTION": "Spot exchange: accounts, balances, deposits, withdrawals, orders and trades.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "OrderSide": "matching.models.ORDER_SIDES",
        "OrderStatus": "matching.models.ORDER_STATUSES",
        "OrderType": "matching.models.ORDER_TYPES",
        "TimeInForce": "matching.models.ORDER_TIMES_IN_FORCE",
        "SelfTradePrevention": "matching.models.ORDER_SELF_TRADE",
        "MarketStatus": "matching.models.MARKET_STATUSES",
        "DepositStatus": "accounts.models.DEPOSIT_STATUSES",
        "WithdrawalStatus": "accounts.models.WITHDRAWAL_STATUSES",
    },
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# --- Security -------------------------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if PRODUCTION:
    # Cookies (the admin's session and CSRF token) travel over HTTPS only.
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # Load balancers probe these over the plain port; they carry no secret and answer only up/down.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    # gunicorn speaks plain HTTP behind a proxy that terminates TLS and sets X-Forwarded-Proto (and
    # must overwrite any such header a client sent). Off where nothing in front sets it.
    if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=True):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # A year, subdomains included, and eligible for the browsers' preload list: an exchange is never
    # meant to be reached over plain HTTP, and the first visit is the one HSTS alone cannot protect.
    # Preloading is hard to undo (months): a domain with a subdomain that must stay on HTTP turns it off.
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)

# What Prometheus presents (`Authorization: Bearer <token>`) to read /metrics.
METRICS_TOKEN = secret_setting("METRICS_TOKEN", "metrics-token")

# --- Sign-in ------------------------------------------------------------------------------------

# A TOTP code (django-otp) after the password. With this on, a staff user without a device can reach
# only the enrolment page until they have set one up; a user who has a device must give its code
# either way.
ADMIN_REQUIRE_2FA = env.bool("ADMIN_REQUIRE_2FA", default=PRODUCTION)
OTP_TOTP_ISSUER = env.str("ADMIN_TOTP_ISSUER", default="Exchange operations")
# The devices' secrets never appear in the admin, not even to whoever may reset a device.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# django-axes counts failed logins by username, at the two doors that take a password: the admin's
# login form and the API's token login (with the API's password change). Both doors count against
# the same username and refuse it for a while once there are too many; a wrong TOTP code counts as a
# failure too. Each door has its own limit and cool-off (console.lockout picks them by request).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# console.lockout.SignInHandler itself ignores every request outside those doors.
AXES_ONLY_ADMIN_SITE = False
AXES_HANDLER = "console.lockout.SignInHandler"
AXES_LOCKOUT_PARAMETERS = ["username"]
AXES_USERNAME_CALLABLE = "console.lockout.username_of"
# Axes warns when the address is not a lock-out parameter too. Locking by address as well would let
# one person's mistakes lock out everyone behind the same office NAT, and a successful login would
# clear that address's failures against every other username; the count per username is what we want.
SILENCED_SYSTEM_CHECKS = ["axes.W006"]


def _positive(name: str, default: int) -> int:
    value = env.int(name, default=default)
    if value < 1:
        raise ImproperlyConfigured(f"{name} must be at least 1")
    return value


ADMIN_LOGIN_FAILURE_LIMIT = _positive("ADMIN_LOGIN_FAILURE_LIMIT", 5)
ADMIN_LOGIN_COOLOFF_SECONDS = _positive("ADMIN_LOGIN_COOLOFF_SECONDS", 3600)
# The API's limit is higher and its cool-off shorter, and attempts refused while locked do not
# restart it: a trader's username is public, so whoever wants to keep it locked must keep guessing
# (the limit every cool-off). Sign-ins already made keep working meanwhile.
API_LOGIN_FAILURE_LIMIT = _positive("API_LOGIN_FAILURE_LIMIT", 10)
API_LOGIN_COOLOFF_SECONDS = _positive("API_LOGIN_COOLOFF_SECONDS", 900)
AXES_FAILURE_LIMIT = "console.lockout.failure_limit"
AXES_COOLOFF_TIME = "console.lockout.cool_off"
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True
AXES_LOCKOUT_CALLABLE = "console.lockout.locked_out_response"
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "otp_token"]
# console/admin.py shows the login records read-only and unlocks through an audited action.
AXES_ENABLE_ADMIN = False
# The address of a request (rate limits, lock-outs, sign-in records): the connection's, or, behind
# this many reverse proxies that append to X-Forwarded-For, the one the outermost proxy saw.
if "ADMIN_TRUSTED_PROXIES" in os.environ:
    raise ImproperlyConfigured("ADMIN_TRUSTED_PROXIES is now TRUSTED_PROXY_COUNT (it covers the whole API)")
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must not be negative")
AXES_CLIENT_IP_CALLABLE = "core.addresses.client_ip"
# DRF's own reading of X-Forwarded-For agrees (the throttles use core.addresses directly).
REST_FRAMEWORK["NUM_PROXIES"] = TRUSTED_PROXY_COUNT

# --- Logging --------------------------------------------------------------------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_JSON = env.bool("LOG_JSON", default=PRODUCTION)

structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "structured": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processor": (
                structlog.processors.JSONRenderer() if LOG_JSON else structlog.dev.ConsoleRenderer(colors=False)
            ),
            "foreign_pre_chain": [
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "kafka": {"level": "WARNING"},
        "django.db.backends": {"level": "WARNING"},
        # django-axes announces itself at every start of every process.
        "axes.apps": {"level": "WARNING"},
    },
}
