"""Django settings for the datastream service, read from the environment.

The embedded default (no variables set) is SQLite plus the in-memory channel
layer in one process. Production sets DATABASE_URL, REDIS_URL and SECRET_KEY.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from settings_service.env import env_bool, env_int, env_json_object, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("DATASTREAM_VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", default=False)
# The production profile: a server database. The embedded one (SQLite) is for
# trying the service on one machine.
PRODUCTION = (env_str("DATABASE_URL") or "").startswith(("postgres", "pgsql"))

_secret = env_str("SECRET_KEY")
if not _secret:
    if not DEBUG and PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off with a production DATABASE_URL.")
    # Embedded profile: a key that is stable per checkout but never shared.
    _secret = "insecure-embedded-" + str(BASE_DIR)
SECRET_KEY: str = _secret

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

HTTP_HOST = env_str("HTTP_HOST", "127.0.0.1")
HTTP_PORT = env_int("HTTP_PORT", 8000)
GRPC_HOST = env_str("GRPC_HOST", "127.0.0.1")
GRPC_PORT = env_int("GRPC_PORT", 50051)
# gRPC serves TLS when given a certificate and key; a client CA turns on mTLS.
GRPC_TLS = {
    "CERT": env_str("GRPC_TLS_CERT"),
    "KEY": env_str("GRPC_TLS_KEY"),
    "CLIENT_CA": env_str("GRPC_TLS_CLIENT_CA"),
}
for _name, _path in (
    ("GRPC_TLS_CERT", GRPC_TLS["CERT"]),
    ("GRPC_TLS_KEY", GRPC_TLS["KEY"]),
    ("GRPC_TLS_CLIENT_CA", GRPC_TLS["CLIENT_CA"]),
):
    if _path and not Path(_path).is_file():
        raise ImproperlyConfigured(f"{_name}={_path!r} is not a readable file.")
if bool(GRPC_TLS["CERT"]) != bool(GRPC_TLS["KEY"]):
    raise ImproperlyConfigured("GRPC_TLS_CERT and GRPC_TLS_KEY must be set together.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "datastream_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's CSS and JS from the app processes themselves, so the
    # admin works without a separate static file server in every profile.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "settings_service.urls"
ASGI_APPLICATION = "settings_service.asgi.application"
WSGI_APPLICATION = "settings_service.wsgi.application"

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

_database_url = env_str("DATABASE_URL") or ""
if not _database_url:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _database_url = f"sqlite:///{VAR_DIR / 'datastream.sqlite3'}"
try:
    _default_db = dj_database_url.parse(_database_url, conn_max_age=60, conn_health_checks=True)
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from None
if _default_db["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock at BEGIN, so concurrent writers queue on
    # the busy timeout instead of failing with "database is locked" on upgrade.
    _default_db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests use a file, not SQLite's shared-cache memory database: worker
    # threads write concurrently, and only a file database queues them on the
    # busy timeout instead of failing with "table is locked".
    _default_db["TEST"] = {
        "NAME": env_str("DATASTREAM_TEST_SQLITE")
        or str(Path(tempfile.gettempdir()) / f"datastream-test-{os.getpid()}.sqlite3")
    }
DATABASES = {"default": _default_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_redis_url = env_str("REDIS_URL")
if _redis_url:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [_redis_url]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

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
# Only for `collectstatic`; WhiteNoise serves straight from the apps' static
# dirs, so no profile needs that step.
STATIC_ROOT = env_str("STATIC_ROOT")
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "datastream_app.api.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["datastream_app.api.auth.TokenPushThrottle"],
    "DEFAULT_PERMISSION_CLASSES": ["datastream_app.api.permissions.DatastreamAccess"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "datastream_app.api.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "datastream REST API",
    "DESCRIPTION": "Typed settings: list capabilities, sync current values, push updates.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# django-grpc-framework's convention: the function that registers servicers.
GRPC_FRAMEWORK = {"ROOT_HANDLERS_HOOK": "datastream_app.rpc.handlers.grpc_handlers"}

# External store mounts from the environment, e.g.
# DATASTREAM_STORES='{"repo": {"BACKEND": "datastream_app.stores.git.GitStore", "PREFIX": "repo/", "OPTIONS": {...}}}'
_extra_stores = env_json_object("DATASTREAM_STORES") or {}
DATASTREAM = {
    "STORES": {
        "default": {"BACKEND": "datastream_app.stores.model.ModelStore", "PREFIX": "", "OPTIONS": {}},
        **_extra_stores,
    },
    # Anonymous clients may read and write from loopback addresses only, and
    # never through a proxy (edge.anonymous_for). On by default only in the
    # embedded profile; the production profile must turn it on explicitly.
    "ANONYMOUS_LOOPBACK": env_bool("DATASTREAM_ANONYMOUS_LOOPBACK", default=not PRODUCTION),
    "MAX_VALUE_BYTES": env_int("DATASTREAM_MAX_VALUE_BYTES", 1024 * 1024, minimum=1, maximum=64 * 1024 * 1024),
    "MAX_KEYS_PER_REQUEST": env_int("DATASTREAM_MAX_KEYS_PER_REQUEST", 10000, minimum=1, maximum=1_000_000),
    "RESYNC_INTERVAL": float(env_int("DATASTREAM_RESYNC_INTERVAL_MS", 1000, minimum=50, maximum=3_600_000)) / 1000,
    "MAX_STREAMS_PER_TOKEN": env_int("DATASTREAM_MAX_STREAMS_PER_TOKEN", 1000, minimum=1, maximum=1_000_000),
    "PUSH_RATE_PER_TOKEN": env_int("DATASTREAM_PUSH_RATE_PER_TOKEN", 50, minimum=0, maximum=1_000_000),
    "EVENT_LOOP": env_str("DATASTREAM_EVENT_LOOP", "uvloop"),
}


def _is_loopback_host(host: str | None) -> bool:
    return (host or "").strip("[]") in {"127.0.0.1", "localhost", "::1"} or (host or "").startswith("127.")


if DATASTREAM["EVENT_LOOP"] not in ("uvloop", "asyncio"):
    raise ImproperlyConfigured(f"DATASTREAM_EVENT_LOOP={DATASTREAM['EVENT_LOOP']!r}: use uvloop or asyncio.")

if (
    DATASTREAM["ANONYMOUS_LOOPBACK"]
    and PRODUCTION
    and not (_is_loopback_host(HTTP_HOST) and _is_loopback_host(GRPC_HOST))
):
    # Behind a proxy every request comes from loopback: anonymous access would be open to all.
    raise ImproperlyConfigured(
        "DATASTREAM_ANONYMOUS_LOOPBACK is on while HTTP_HOST/GRPC_HOST listen beyond loopback in the production "
        "profile; set DATASTREAM_ANONYMOUS_LOOPBACK=0 and use API tokens."
    )

if PRODUCTION and not DEBUG:
    # Browsers reach the admin over HTTPS (TLS ends at the proxy, which sets X-Forwarded-Proto).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    # Probes and in-cluster clients speak plain HTTP to the process itself.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0, maximum=10**9)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
