"""The one settings module. Everything that differs between a laptop and production comes
from environment variables; the defaults are safe for development and refused in production."""

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent

DEVELOPMENT_SECRET_KEY = "development-only-secret-key-never-use-in-production"


def envbool(name: str, default: str) -> bool:
    value = os.getenv(name, default).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), not {value!r}")


def envint(name: str, default: str) -> int:
    value = os.getenv(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def envlist(name: str, default: str) -> list[str]:
    return [part.strip() for part in os.getenv(name, default).split(",") if part.strip()]


def database_from_url(url: str) -> dict:
    """postgres://user:password@host:port/name?options; a host starting with %2F (or the
    `host` query option) is a Unix socket directory, which is how the embedded server listens."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// URL: PostgreSQL is the one database")
    query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    host = unquote(parsed.hostname or "") if parsed.hostname else query.pop("host", "")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
        "USER": unquote(parsed.username or "postgres"),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(parsed.port or ""),
        # Each gunicorn or Celery worker keeps its connection: opening one per request cost more
        # than the framework's whole floor request (bench/http_bench.py). Health checks replace a
        # connection the server closed before the request uses it.
        "CONN_MAX_AGE": envint("DATABASE_CONN_MAX_AGE", "300"),
        "CONN_HEALTH_CHECKS": True,
        # ISO date output is what the exports stream from COPY (a date cast to text); pinned
        # here rather than left to the server's postgresql.conf.
        "OPTIONS": {"options": "-c datestyle=ISO,YMD", **query},
        "TEST": {"NAME": os.getenv("DATABASE_TEST_NAME") or None},
    }


DEBUG = envbool("DJANGO_DEBUG", "true")
SECRET_KEY = os.getenv("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
if not DEBUG and (SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured(
        "Production (DJANGO_DEBUG=false) refuses to start without a real SECRET_KEY of 50+ characters."
    )

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = os.getenv("SITE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    # The admin, open only to people with no blinded role (404 for everyone else).
    "trialsite.admin_site.TrialAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "trialsite",
    "enrollment",
    "randomization",
    "schedules",
    "dosing",
    "dosing.reminders",
    "reports",
    "crf",
    "safety",
    "datasets",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # After authentication (it counts the user's trials), before anything that reads the path.
    "trialsite.tenancy.TrialMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "trialsite.middleware.SecurityHeadersMiddleware",
    # Inside the language and header middleware, so its refusals are translated and carry the
    # security headers; still before any view or CSRF check reads the body.
    "trialsite.middleware.RequestBodyGuardMiddleware",
    "trialsite.middleware.ApiJsonErrorsMiddleware",
    "trialsite.middleware.SiteTimezoneMiddleware",
    "trialsite.middleware.TwoFactorMiddleware",
    # Last, so a locked-out login is refused before any view runs.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "trialsite.urls"
WSGI_APPLICATION = "trialsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "trialsite.context_processors.navigation",
            ],
        },
    },
]

DATABASES = {"default": database_from_url(os.getenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/trialsite"))}
# Two roles (README, "Database roles and the audit chain"): DATABASE_URL is the application's
# role, which only reads and writes rows; `manage.py migrate` (and flush) connect as the owner
# of the tables and trigger functions, given here. Unset, migrations run as DATABASE_URL's role
# (a one-role development database; `check --deploy` says so when that role could rewrite the trail).
DATABASE_OWNER = database_from_url(os.environ["DATABASE_OWNER_URL"]) if os.getenv("DATABASE_OWNER_URL") else None
# The role migrations grant row privileges to.
DATABASE_APP_ROLE = DATABASES["default"]["USER"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.getenv("REDIS_URL", "redis://127.0.0.1:6379/0")
# `make test` runs the suite in several pytest-xdist processes that share one REDIS_URL: each
# (and the Celery workers its tests start, which inherit PYTEST_XDIST_WORKER) keeps its cache
# counters (the re-entry throttle) and its Celery queues under its own prefix, so no process
# counts another's failures or consumes another's tasks against the wrong test database.
REDIS_KEY_PREFIX = f"xdist-{os.environ['PYTEST_XDIST_WORKER']}:" if os.getenv("PYTEST_XDIST_WORKER") else ""

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_KEY_PREFIX,
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Tests set a fast hasher; real logins keep Django's default.
PASSWORD_HASHERS = envlist("PASSWORD_HASHERS", "") or [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Staff sessions end after 30 idle minutes; every request renews the clock.
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", str(30 * 60))
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# How long a password re-entry (e-signature, unblinding) stays fresh.
REAUTHENTICATION_MAX_AGE = timedelta(minutes=envint("REAUTHENTICATION_MINUTES", "5"))

AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", "5")

# API tokens (trialsite/tokens.py) stop working this many hours after they are made.
API_TOKEN_HOURS = envint("API_TOKEN_HOURS", "8")

# Two-factor (TOTP, django-otp): anyone may enrol an authenticator app; with this on, users who
# can reveal an arm (statistician, supply manager, PI for emergencies) must. Off by default so
# a first `make run` needs no phone; a production deployment should set it.
TWO_FACTOR_FOR_UNBLINDED = envbool("TWO_FACTOR_FOR_UNBLINDED", "false")

# Bodies: forms and JSON up to Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB); uploads (the CSV
# imports) up to this. Larger requests are refused with 413 before any view reads them.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", str(2_621_440))
REQUEST_UPLOAD_MAX_BYTES = envint("REQUEST_UPLOAD_MAX_BYTES", str(10 * 1024 * 1024))
OTP_TOTP_ISSUER = os.getenv("OTP_TOTP_ISSUER", "trialsite")
AXES_COOLOFF_TIME = timedelta(minutes=envint("AXES_COOLOFF_MINUTES", "30"))
AXES_LOCKOUT_PARAMETERS = ["username"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
# Dates and numbers on screens and in e-mails follow the user's language (trialsite/formats);
# exports and the audit trail stay ISO 8601, the form data managers and auditors compare.
FORMAT_MODULE_PATH = ["trialsite.formats"]
USE_I18N = True
# Stored in UTC; shown in the zone of the site the user works at (SiteTimezoneMiddleware).
USE_TZ = True
TIME_ZONE = "UTC"

# Absolute: a relative one would be prefixed with the first request's script prefix, which
# inside a trial (/t/<NCT id>/) is that trial's (trialsite.tenancy).
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# In development whitenoise serves straight from the app folders; production collects first.
WHITENOISE_AUTOREFRESH = DEBUG
WHITENOISE_USE_FINDERS = DEBUG
MEDIA_ROOT = Path(os.getenv("MEDIA_ROOT", str(BASE_DIR / "var" / "media")))

EMAIL_BACKEND = os.getenv("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = os.getenv("EMAIL_FILE_PATH", str(BASE_DIR / "var" / "mail"))
EMAIL_HOST = os.getenv("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", "25")
EMAIL_HOST_USER = os.getenv("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.getenv("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "false")
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "trial-system@localhost")

# Where the audit chain's seals are appended (one JSON line each; never rewritten), and where
# `manage.py backup` writes.
AUDIT_SEAL_FILE = Path(os.getenv("AUDIT_SEAL_FILE", str(BASE_DIR / "var" / "audit-seals.jsonl")))
BACKUP_DIR = Path(os.getenv("BACKUP_DIR", str(BASE_DIR / "var" / "backups")))

# Every file here is a trial `make run` (and `manage.py load_protocol` with no path) loads: another
# trial is another file, not another code change. PROTOCOL_FILE is the first by name unless set:
# the demo's trial and the one the tests load.
PROTOCOLS_DIR = Path(os.getenv("PROTOCOLS_DIR", str(BASE_DIR / "protocols")))
PROTOCOL_FILE = Path(os.getenv("PROTOCOL_FILE") or str(min(PROTOCOLS_DIR.glob("*.toml"), default=PROTOCOLS_DIR)))

REST_FRAMEWORK = {
    # Tokens first, so that a refused or missing credential is answered 401 with the reason.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "trialsite.tokens.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "trialsite.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Trial site API",
    "DESCRIPTION": "Screening, randomization and dosing for clinical trials. Blinded users never see an arm.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI served from our own static files (the CSP allows no CDN and no inline script).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "VisitStatusEnum": "schedules.models.VisitStatus",
        "VisitKindEnum": "schedules.models.VisitKind",
        "KitStatusEnum": "dosing.models.KitStatus",
        "LabCountUnitEnum": "dosing.labs.CountUnit",
        "FormStatusEnum": "crf.models.FormStatus",
        "AdverseEventRelationEnum": "safety.models.Relation",
        "AdverseEventActionEnum": "safety.models.Action",
        "AdverseEventOutcomeEnum": "safety.models.Outcome",
        "SeriousnessEnum": "safety.models.Seriousness",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "trialsite.openapi.add_error_responses",
    ],
}

CELERY_BROKER_URL = os.getenv("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", "3600"),
    "global_keyprefix": REDIS_KEY_PREFIX,
}
CELERY_BEAT_SCHEDULE: dict = {
    # Hourly, so every site's midnight is caught within the hour; both tasks are idempotent.
    "dosing-mark-missed-visits": {"task": "dosing.tasks.mark_missed_visits", "schedule": 3600.0},
    "dosing-expire-kits": {"task": "dosing.tasks.expire_kits", "schedule": 3600.0},
    # Resupply on a schedule, never right after one participant's dosing (its timing would point at a content).
    "dosing-resupply-all-sites": {"task": "dosing.tasks.resupply_all_sites", "schedule": 6 * 3600.0},
    # Every minute: hand due reminders to the workers (a reminder is late by a minute at most).
    "reminders-dispatch": {"task": "dosing.reminders.tasks.dispatch_due_reminders", "schedule": 60.0},
    # Audit rows are hashed into the chain shortly after they commit, and the chain's head is
    # published (file and e-mail to the sponsor) daily; see trialsite/audit.py.
    "audit-chain-extend": {"task": "trialsite.tasks.extend_audit_chain", "schedule": 60.0},
    "audit-seal": {"task": "trialsite.tasks.seal_audit_chain", "schedule": 24 * 3600.0},
    "reports-requeue-exports": {"task": "reports.tasks.requeue_exports", "schedule": 300.0},
    # Every minute: the SAE clock's notices (the first is also handed over when the event commits).
    "safety-dispatch-sae-notices": {"task": "safety.tasks.dispatch_sae_notices", "schedule": 60.0},
}
# A reminder claimed by a worker that then died is taken over after this long; one handed to
# the broker and never claimed (the broker was down, the message lost) is handed over again.
REMINDER_CLAIM_LEASE_SECONDS = envint("REMINDER_CLAIM_LEASE_SECONDS", "600")
REMINDER_REQUEUE_SECONDS = envint("REMINDER_REQUEUE_SECONDS", "300")
# The same for exports: a worker killed mid-export leaves it "running"; after this long another
# takes it over. One queued while the broker was down is handed over again after the second.
EXPORT_CLAIM_LEASE_SECONDS = envint("EXPORT_CLAIM_LEASE_SECONDS", "1800")
EXPORT_REQUEUE_SECONDS = envint("EXPORT_REQUEUE_SECONDS", "300")

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
)
if not DEBUG:
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "true")
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", str(60 * 60 * 24 * 365))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "true")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
