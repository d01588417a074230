"""Postflow settings: one module, driven by the environment (DESIGN.md §2).

With no environment at all this runs the embedded default: SQLite and files under ``var/``,
an in-process Dramatiq worker and the local AI provider. ``DATABASE_URL``, ``REDIS_URL`` and
``S3_BUCKET`` switch each part to its production service.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("POSTFLOW_VAR_DIR", BASE_DIR / "var"))


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None:
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true/false).")


def env_int(name: str, default: int) -> int:
    value = env(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None


def env_float(name: str, default: float) -> float:
    value = env(name)
    try:
        return default if value is None else float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number.") from None


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in (env(name, default) or "").split(",") if item.strip()]


TESTING = "pytest" in sys.modules or env_bool("POSTFLOW_TESTING", False)

# The embedded default keeps its SQLite file and stored files under var/: make sure it exists whenever
# one of them is in use (not only when SECRET_KEY is unset), so `migrate` works on a fresh clone.
if not env("DATABASE_URL") or not env("S3_BUCKET") or not env("SECRET_KEY"):
    with contextlib.suppress(OSError):  # read-only: Django names the real problem when it opens a file
        VAR_DIR.mkdir(parents=True, exist_ok=True)

# --- Core -------------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    # Development only: a per-machine key kept under var/ so sessions and signed URLs survive restarts.
    _key_file = VAR_DIR / "secret_key"
    try:
        if not _key_file.exists():
            _key_file.write_text(secrets.token_urlsafe(50))
        SECRET_KEY = _key_file.read_text().strip()
    except OSError:
        SECRET_KEY = secrets.token_urlsafe(50)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    # media first: its runserver (which also starts the embedded worker) wins over staticfiles'.
    "media",
    "content",
    "moderation",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_dramatiq",
    "imagekit",
    "storages",
    "axes",
]

MIDDLEWARE = [
    "config.observability.RequestObservabilityMiddleware",
    # Every answer under /api/ and /m/ is JSON, even Django's own (DEBUG 404 pages, 405s).
    "config.views.JsonApiErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Idempotency-Key on every authenticated API POST (DESIGN §9): replays, 409 in flight, 422 reuse.
    "content.idempotency.IdempotencyMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A suspended account's session stops working at its next request (DESIGN.md §11).
    "config.authentication.SuspendedAccountMiddleware",
    # Last, as django-axes asks: turns a locked-out login into the lockout answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

# --- Database -----------------------------------------------------------------------------------
# The embedded worker writes from other threads: wait for the lock instead of failing, take the write
# lock at BEGIN (a deferred transaction that later writes fails at once with "database is locked"), and
# let readers go on while a writer works (WAL). Every SQLite database gets these, however it is named.
SQLITE_OPTIONS = {
    "timeout": 30,
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "db.sqlite3"}}
for _db in DATABASES.values():
    if _db["ENGINE"] == "django.db.backends.sqlite3":
        # Explicit OPTIONS from the URL's query string win over the defaults.
        _db["OPTIONS"] = {**SQLITE_OPTIONS, **_db.get("OPTIONS", {})}
        # A file, not :memory:, so that worker threads in tests share the database with the test.
        _db.setdefault("TEST", {}).setdefault("NAME", str(VAR_DIR / f"test-{os.getpid()}.sqlite3"))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out account or address before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # ModelBackend that refuses suspended accounts' logins (admin form and auth/token).
    "config.authentication.StandingBackend",
]
if TESTING:
    # Hashing dominates a test suite that creates many users; real hashers stay in production.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files (served by WhiteNoise; no CDN needed, works offline) ---------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- Storage (DESIGN.md §2, media/storage.py is the only code that uses it) -----------------------
S3_BUCKET = env("S3_BUCKET")
S3_ENDPOINT_URL = env("S3_ENDPOINT_URL")
S3_REGION = env("S3_REGION", "us-east-1")
STORAGE_ROOT = Path(env("STORAGE_ROOT", str(VAR_DIR / "storage")))
if S3_BUCKET:
    _media_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": S3_ENDPOINT_URL,
            "region_name": S3_REGION,
            "access_key": env("S3_ACCESS_KEY_ID"),
            "secret_key": env("S3_SECRET_ACCESS_KEY"),
            "default_acl": "private",
            "querystring_auth": True,
            "querystring_expire": env_int("MEDIA_URL_TTL_SECONDS", 3600),
            "file_overwrite": True,
            "addressing_style": env("S3_ADDRESSING_STYLE", "path"),
            "signature_version": "s3v4",
        },
    }
else:
    _media_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": STORAGE_ROOT, "base_url": None, "file_permissions_mode": 0o640},
    }
STORAGES = {
    "default": _media_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Signed media URLs: lifetime, and an optional separate host that serves user media (cookie-less).
MEDIA_URL_TTL_SECONDS = env_int("MEDIA_URL_TTL_SECONDS", 3600)
# How often the scheduler (and, embedded, runserver's publisher thread) publishes due scheduled posts.
SCHEDULED_PUBLISH_INTERVAL_SECONDS = env_int("SCHEDULED_PUBLISH_INTERVAL_SECONDS", 5)
MEDIA_PUBLIC_BASE_URL = env("MEDIA_PUBLIC_BASE_URL")
UPLOAD_URL_TTL_SECONDS = env_int("UPLOAD_URL_TTL_SECONDS", 3600)
# Resumable uploads (DESIGN.md §8): required above UPLOAD_SINGLE_MAX_BYTES; parts of
# UPLOAD_PART_SIZE_BYTES (at least 5 MiB on S3, which refuses smaller non-final parts); an unfinished
# upload is aborted by purge_media once UPLOAD_RESUMABLE_TTL_SECONDS have passed.
UPLOAD_SINGLE_MAX_BYTES = env_int("UPLOAD_SINGLE_MAX_BYTES", 64 * 1024 * 1024)
UPLOAD_PART_SIZE_BYTES = env_int("UPLOAD_PART_SIZE_BYTES", 16 * 1024 * 1024)
UPLOAD_RESUMABLE_TTL_SECONDS = env_int("UPLOAD_RESUMABLE_TTL_SECONDS", 24 * 3600)

# --- Broker (Dramatiq) ----------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL")
DRAMATIQ_WORKER_TIMEOUT_MS = env_int("DRAMATIQ_WORKER_TIMEOUT_MS", 100)
_dramatiq_middleware = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.ShutdownNotifications",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Retries",
    "dramatiq.middleware.CurrentMessage",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
    # Every job's message id, duration and peak memory; reaps dead workers' leftovers at boot.
    "media.middleware.JobContext",
    # Loads the local AI models when a worker boots, not in the first review (AI_PRELOAD_MODELS).
    "moderation.middleware.PreloadModels",
]
if REDIS_URL and env_bool("DRAMATIQ_PROMETHEUS", False):
    _dramatiq_middleware.insert(0, "dramatiq.middleware.prometheus.Prometheus")
if REDIS_URL and not TESTING:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.redis.RedisBroker",
        "OPTIONS": {
            "url": REDIS_URL,
            "namespace": env("DRAMATIQ_NAMESPACE", "postflow"),
            # A killed worker's messages are re-queued once its heartbeat is this old (ms)...
            "heartbeat_timeout": env_int("DRAMATIQ_HEARTBEAT_TIMEOUT_MS", 60_000),
            # ...by a maintenance pass that runs on this many commands out of a million.
            "maintenance_chance": env_int("DRAMATIQ_MAINTENANCE_CHANCE", 1000),
        },
        "MIDDLEWARE": _dramatiq_middleware,
    }
    EMBEDDED_WORKER = False
else:
    # No Redis: messages go to an in-memory broker consumed by a worker inside the same process
    # (see config/broker.py). Tests use the same StubBroker with an explicit worker fixture.
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": _dramatiq_middleware,
    }
    EMBEDDED_WORKER = not TESTING
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]

# --- Cache (platform settings accessor, throttles, locks) -----------------------------------------
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "config.cache.ResilientRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "pf",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# How many reverse proxies in front of the web processes append to X-Forwarded-For (nginx, a load
# balancer). 0 (the default): the header is ignored and the client address is REMOTE_ADDR. This one
# setting feeds DRF's throttles, the login lockout and the request log (config.security.client_ip).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured(f"TRUSTED_PROXY_COUNT must be 0 or more, not {TRUSTED_PROXY_COUNT}.")

# --- REST API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # DRF's token and session authentication, plus the request-time suspension check (403
        # `account_suspended`, DESIGN.md §11).
        "config.authentication.TokenAuthentication",
        "config.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    # JSON only, DEBUG or not: the browsable API answered HTML to browsers, and 500s on generic
    # views without a queryset. A client asking for something else (Accept, ?format=) still gets JSON.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "config.parsers.FallbackContentNegotiation",
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "auth": env("THROTTLE_AUTH", "30/min"),
        "uploads_hour": env("THROTTLE_UPLOADS_HOUR", "120/hour"),
        "uploads_day": env("THROTTLE_UPLOADS_DAY", "1000/day"),
        "reports": env("THROTTLE_REPORTS", "60/hour"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Anonymous throttles key on the client address (see TRUSTED_PROXY_COUNT above).
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Postflow API",
    "DESCRIPTION": "Creators post text, links, polls, images, video and audio; see DESIGN.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "ENUM_NAME_OVERRIDES": {"RevisionStatusEnum": "content.models.RevisionStatus"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "content.idempotency.schema_hook",  # Idempotency-Key on every authenticated POST
    ],
}
# JSON bodies nested deeper than this are refused with 400 `json_too_deep` (no endpoint needs more
# than a few levels; deep nesting would otherwise exhaust the interpreter's recursion limit).
JSON_MAX_DEPTH = env_int("JSON_MAX_DEPTH", 32)
# Bodies larger than this are refused before parsing (JSON); file uploads stream to disk.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024
FILE_UPLOAD_TEMP_DIR = None

# --- Platform settings defaults (the singleton row reads these when first created) ---------------
MODERATION_MODE = env("MODERATION_MODE", "ai_prescreen")
AI_PROVIDER = env("AI_PROVIDER", "local")
# Load the local models when a worker process starts (embedded worker and rundramatiq) instead of in
# the first review; off under tests, where most workers never review anything.
AI_PRELOAD_MODELS = env_bool("AI_PRELOAD_MODELS", not TESTING)
AI_REVIEW_THRESHOLD = env_float("AI_REVIEW_THRESHOLD", 0.3)
AI_REVOKE_THRESHOLD = env_float("AI_REVOKE_THRESHOLD", 0.7)
REPORT_THRESHOLD = env_int("REPORT_THRESHOLD", 3)
POST_PROCESSING_ENABLED = env_bool("POST_PROCESSING_ENABLED", True)
if not 0.0 <= AI_REVIEW_THRESHOLD <= AI_REVOKE_THRESHOLD <= 1.0:
    raise ImproperlyConfigured(
        f"AI thresholds must satisfy 0 <= AI_REVIEW_THRESHOLD ({AI_REVIEW_THRESHOLD}) <= "
        f"AI_REVOKE_THRESHOLD ({AI_REVOKE_THRESHOLD}) <= 1."
    )
if REPORT_THRESHOLD < 1:
    raise ImproperlyConfigured(f"REPORT_THRESHOLD must be at least 1, not {REPORT_THRESHOLD}.")
# Reports' weight (moderation/policy.py): accounts younger than this weigh nothing; reporters with at
# least this many decided reports, mostly not upheld, weigh nothing.
REPORT_MIN_ACCOUNT_AGE_HOURS = env_int("REPORT_MIN_ACCOUNT_AGE_HOURS", 24)
REPORT_TRACK_RECORD_MIN = env_int("REPORT_TRACK_RECORD_MIN", 3)
# The review queue shows an AI category chip only at or above this score (a 0.00 post shows none).
MODERATION_CHIP_FLOOR = env_float("MODERATION_CHIP_FLOOR", 0.2)
PROCESSOR_EVENT_TRIGGER_MEDIA_ENABLED = env_bool("PROCESSOR_EVENT_TRIGGER_MEDIA_ENABLED", True)
MEDIA_SWEEP_SCHEDULE_ENABLED = env_bool("MEDIA_SWEEP_SCHEDULE_ENABLED", False)
MEDIA_SWEEP_CRON = env("MEDIA_SWEEP_CRON", "*/15 * * * *")
PLATFORM_SETTINGS_CACHE_SECONDS = env_int("PLATFORM_SETTINGS_CACHE_SECONDS", 30)

# --- Media limits ----------------------------------------------------------------------------------
MB = 1024 * 1024
MEDIA_MAX_BYTES = {
    "image": env_int("MEDIA_MAX_IMAGE_BYTES", 25 * MB),
    "video": env_int("MEDIA_MAX_VIDEO_BYTES", 1024 * MB),
    "audio": env_int("MEDIA_MAX_AUDIO_BYTES", 200 * MB),
}
MEDIA_MAX_PER_POST = env_int("MEDIA_MAX_PER_POST", 10)
MEDIA_USER_QUOTA_BYTES = env_int("MEDIA_USER_QUOTA_BYTES", 5 * 1024 * MB)
MEDIA_MAX_ATTEMPTS = env_int("MEDIA_MAX_ATTEMPTS", 3)
MEDIA_STUCK_MINUTES = env_int("MEDIA_STUCK_MINUTES", 30)
# A processing attempt writes Media.heartbeat_at at most this often while it reports progress...
MEDIA_HEARTBEAT_SECONDS = env_int("MEDIA_HEARTBEAT_SECONDS", 5)
# ...and one that beat within this long is alive: never "stuck", whatever --stuck-minutes says.
MEDIA_HEARTBEAT_STALE_SECONDS = env_int("MEDIA_HEARTBEAT_STALE_SECONDS", 12 * MEDIA_HEARTBEAT_SECONDS)
# Per-user fairness: at most this many media of one owner processed at once per kind (queue);
# a message over the cap comes back after MEDIA_FAIRNESS_DELAY_MS without using an attempt. 0: no cap.
MEDIA_MAX_CONCURRENT_PER_USER = env_int("MEDIA_MAX_CONCURRENT_PER_USER", 1)
MEDIA_FAIRNESS_DELAY_MS = env_int("MEDIA_FAIRNESS_DELAY_MS", 1000)
MEDIA_RETENTION_DAYS = env_int("MEDIA_RETENTION_DAYS", 30)
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 50_000_000)
IMAGE_JPEG_FALLBACK = env_bool("IMAGE_JPEG_FALLBACK", False)
IMAGE_MAX_FRAMES = env_int("IMAGE_MAX_FRAMES", 1000)
IMAGE_FFMPEG_TIMEOUT_SECONDS = env_int("IMAGE_FFMPEG_TIMEOUT_SECONDS", 120)
# Decoded work a job may take on, checked from headers before decoding (issue 9 row 5). Images: canvas
# pixels x frames (and the MP4 made of an animation); video: width x height x fps x seconds.
MEDIA_MAX_IMAGE_DECODED_PIXELS = env_int("MEDIA_MAX_IMAGE_DECODED_PIXELS", 1_000_000_000)
MEDIA_MAX_VIDEO_DECODED_PIXELS = env_int("MEDIA_MAX_VIDEO_DECODED_PIXELS", 1920 * 1080 * 30 * 3600)
VIDEO_MAX_DURATION_SECONDS = env_int("VIDEO_MAX_DURATION_SECONDS", 2 * 3600)
VIDEO_MAX_PIXELS = env_int("VIDEO_MAX_PIXELS", 3840 * 2160)
VIDEO_CRF = env_int("VIDEO_CRF", 23)
VIDEO_PRESET = env("VIDEO_PRESET", "veryfast")
VIDEO_TIMEOUT_FACTOR = env_float("VIDEO_TIMEOUT_FACTOR", 4.0)
AUDIO_MAX_DURATION_SECONDS = env_int("AUDIO_MAX_DURATION_SECONDS", 4 * 3600)
AUDIO_WAVEFORM_BUCKETS = env_int("AUDIO_WAVEFORM_BUCKETS", 800)
AUDIO_TIMEOUT_FACTOR = env_float("AUDIO_TIMEOUT_FACTOR", 1.0)
AUDIO_TIMEOUT_MIN_SECONDS = env_int("AUDIO_TIMEOUT_MIN_SECONDS", 60)
VIDEO_TIMEOUT_MIN_SECONDS = env_int("VIDEO_TIMEOUT_MIN_SECONDS", 60)
# Speech to text (issue 17, media/speech): transcripts and captions for audio and video, on queue
# media.speech. pocketsphinx (offline, English model in its wheel) | faster-whisper (model files at
# SPEECH_MODEL_PATH, never downloaded) | off.
SPEECH_PROVIDER = env("SPEECH_PROVIDER", "pocketsphinx")
SPEECH_MODEL_PATH = env("SPEECH_MODEL_PATH", "")
SPEECH_LANGUAGE = env("SPEECH_LANGUAGE", "en")
SPEECH_TIMEOUT_FACTOR = env_float("SPEECH_TIMEOUT_FACTOR", 2.0)  # × the duration: decode budget
SPEECH_TIMEOUT_MIN_SECONDS = env_int("SPEECH_TIMEOUT_MIN_SECONDS", 120)
# ai_prescreen: how long the review waits for a post's transcripts before a human decides (fail closed).
SPEECH_PRESCREEN_WAIT_SECONDS = env_int("SPEECH_PRESCREEN_WAIT_SECONDS", 1800)
FFPROBE_TIMEOUT_SECONDS = env_int("FFPROBE_TIMEOUT_SECONDS", 30)
FFMPEG_BINARY = env("FFMPEG_BINARY", "ffmpeg")
FFPROBE_BINARY = env("FFPROBE_BINARY", "ffprobe")

# --- Perceptual-hash blocklist (Meta's PDQ; media/processors/pdq.py) ------------------------------
# A medium whose PDQ hash is within this Hamming distance of a blocked one is blocked like an exact
# sha256 match (31 is Meta's published threshold). Hashes below PDQ_MIN_QUALITY (flat, blank
# pictures) are stored but never matched; PDQ_VIDEO_FRAMES frames per video are hashed besides its poster.
PDQ_MATCH_DISTANCE = env_int("PDQ_MATCH_DISTANCE", 31)
PDQ_MIN_QUALITY = env_int("PDQ_MIN_QUALITY", 50)
PDQ_VIDEO_FRAMES = env_int("PDQ_VIDEO_FRAMES", 4)
PDQ_FRAME_TIMEOUT_SECONDS = env_float("PDQ_FRAME_TIMEOUT_SECONDS", 60.0)

# --- AI prescreen ------------------------------------------------------------------------------------
AI_VIDEO_FRAMES = env_int("AI_VIDEO_FRAMES", 8)
AI_FRAME_TIMEOUT_SECONDS = env_float("AI_FRAME_TIMEOUT_SECONDS", 120.0)
# Animated images are screened like video (moderation/providers/frames.py): frames by time and by scene
# change, every one scored; decoding is bounded before (canvas pixels x frames) and during (seconds).
AI_ANIMATION_TIME_FRAMES = env_int("AI_ANIMATION_TIME_FRAMES", 8)
AI_ANIMATION_SCENE_FRAMES = env_int("AI_ANIMATION_SCENE_FRAMES", 16)
AI_SCENE_THRESHOLD = env_float("AI_SCENE_THRESHOLD", 0.02)
AI_ANIMATION_TIMEOUT_SECONDS = env_float("AI_ANIMATION_TIMEOUT_SECONDS", 60.0)
AI_ANIMATION_MAX_DECODED_PIXELS = env_int("AI_ANIMATION_MAX_DECODED_PIXELS", 1_000_000_000)
AI_MAX_RETRIES = env_int("AI_MAX_RETRIES", 3)
HIVE_API_KEY = env("HIVE_API_KEY")
HIVE_API_URL = env("HIVE_API_URL", "https://api.thehive.ai/api/v2/task/sync")
HIVE_TIMEOUT_SECONDS = env_float("HIVE_TIMEOUT_SECONDS", 20.0)
HIVE_TEXT_API_KEY = env("HIVE_TEXT_API_KEY") or None  # a separate key for Hive's text model, if any
HIVE_MAX_ATTEMPTS = env_int("HIVE_MAX_ATTEMPTS", 3)
HIVE_BACKOFF_SECONDS = env_float("HIVE_BACKOFF_SECONDS", 0.5)
HIVE_MAX_RETRY_WAIT_SECONDS = env_float("HIVE_MAX_RETRY_WAIT_SECONDS", 30.0)
HIVE_TOTAL_BUDGET_SECONDS = env_float("HIVE_TOTAL_BUDGET_SECONDS", 120.0)
AI_STUB_SCORE = env_float("AI_STUB_SCORE", 0.0)
if AI_PROVIDER and "stub" in AI_PROVIDER.split(",") and not DEBUG and not TESTING:
    raise ImproperlyConfigured("AI_PROVIDER=stub is for tests only; it cannot run with DEBUG off.")

# Idempotency-Key (content/idempotency.py): how long a key's response is replayed, and after how long
# a claim whose request never finished (a crashed process) is given up.
IDEMPOTENCY_TTL_HOURS = env_int("IDEMPOTENCY_TTL_HOURS", 24)
IDEMPOTENCY_LOCK_SECONDS = env_int("IDEMPOTENCY_LOCK_SECONDS", 300)

# --- Outbound requests (DESIGN §12, config/outbound.py) ----------------------------------------------
# Every server-side fetch (link previews, webhooks) refuses private, loopback, link-local and metadata
# addresses. Turning that off exists for tests and local demos against 127.0.0.1 only.
OUTBOUND_ALLOW_PRIVATE_NETWORKS = env_bool("OUTBOUND_ALLOW_PRIVATE_NETWORKS", False)
OUTBOUND_USER_AGENT = env("OUTBOUND_USER_AGENT", "Postflow/1.0 (+link previews and webhooks)")
if OUTBOUND_ALLOW_PRIVATE_NETWORKS and not DEBUG and not TESTING:
    raise ImproperlyConfigured(
        "OUTBOUND_ALLOW_PRIVATE_NETWORKS is for tests only; it cannot run with DEBUG off."
    )

# django-imagekit: variants are generated by our worker, never lazily inside a web request.
IMAGEKIT_DEFAULT_CACHEFILE_STRATEGY = "imagekit.cachefiles.strategies.Optimistic"
IMAGEKIT_DEFAULT_CACHEFILE_BACKEND = "imagekit.cachefiles.backends.Simple"

# --- Livestreams (DESIGN.md §13; media/live/) --------------------------------------------------------
# local: the RTMP ingest on this machine (nginx with Debian's libnginx-mod-rtmp, supervised by
# `manage.py run_live_ingest`, or by runserver on the embedded default); mux: Mux's live-stream API.
LIVESTREAM_PROVIDER = (env("LIVESTREAM_PROVIDER", "local") or "local").lower()
if LIVESTREAM_PROVIDER not in ("local", "mux"):
    raise ImproperlyConfigured(f"LIVESTREAM_PROVIDER must be local or mux, not {LIVESTREAM_PROVIDER!r}.")
LIVESTREAM_RTMP_HOST = env("LIVESTREAM_RTMP_HOST", "127.0.0.1")  # the address nginx listens on
LIVESTREAM_RTMP_PORT = env_int("LIVESTREAM_RTMP_PORT", 1935)
# What encoders are told (the owner's ingest_url); default rtmp://<host>:<port>/live.
LIVESTREAM_INGEST_URL = env("LIVESTREAM_INGEST_URL", "")
LIVESTREAM_NGINX = env("LIVESTREAM_NGINX", "nginx")
LIVESTREAM_NGINX_MODULE = env("LIVESTREAM_NGINX_MODULE", "/usr/lib/nginx/modules/ngx_rtmp_module.so")
LIVESTREAM_EMBEDDED_INGEST = env_bool("LIVESTREAM_EMBEDDED_INGEST", True)  # runserver starts the ingest
LIVESTREAM_SEGMENT_SECONDS = env_float("LIVESTREAM_SEGMENT_SECONDS", 2.0)
# false: the encoder's H.264/AAC is remuxed into HLS (cheap); true: re-encoded to one 720p rung.
LIVESTREAM_TRANSCODE = env_bool("LIVESTREAM_TRANSCODE", False)
LIVESTREAM_AI_INTERVAL_SECONDS = env_float("LIVESTREAM_AI_INTERVAL_SECONDS", 10.0)
LIVESTREAM_INGEST_STALE_SECONDS = env_int("LIVESTREAM_INGEST_STALE_SECONDS", 30)
LIVESTREAM_WORK_DIR = Path(env("LIVESTREAM_WORK_DIR", str(VAR_DIR / "live")))
MUX_TOKEN_ID = env("MUX_TOKEN_ID", "")
MUX_TOKEN_SECRET = env("MUX_TOKEN_SECRET", "")
MUX_WEBHOOK_SECRET = env("MUX_WEBHOOK_SECRET", "")
MUX_API_URL = env("MUX_API_URL", "https://api.mux.com")
MUX_STREAM_URL = env("MUX_STREAM_URL", "https://stream.mux.com")
MUX_INGEST_URL = env("MUX_INGEST_URL", "rtmps://global-live.mux.com:443/app")
MUX_TIMEOUT_SECONDS = env_float("MUX_TIMEOUT_SECONDS", 10.0)
MUX_WEBHOOK_TOLERANCE_SECONDS = env_int("MUX_WEBHOOK_TOLERANCE_SECONDS", 300)

# --- Security ---------------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_REFERRER_POLICY = "same-origin"

# Failed logins (admin and API), counted by django-axes in three groups (config.logins): one username
# from one address (LOGIN_FAILURE_LIMIT), one address whatever the username (LOGIN_ADDRESS_FAILURE_LIMIT),
# one username from every address (LOGIN_ACCOUNT_FAILURE_LIMIT, 0 = off). A group over its limit refuses
# logins for LOGIN_LOCKOUT_MINUTES from its last failure. Operators unlock with
# `manage.py axes_reset_username <name>` / `axes_reset_ip <ip>` / `axes_reset` (docs/operations.md).
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
LOGIN_ADDRESS_FAILURE_LIMIT = env_int("LOGIN_ADDRESS_FAILURE_LIMIT", 30)
LOGIN_ACCOUNT_FAILURE_LIMIT = env_int("LOGIN_ACCOUNT_FAILURE_LIMIT", 100)
LOGIN_LOCKOUT_MINUTES = env_int("LOGIN_LOCKOUT_MINUTES", 15)
if LOGIN_FAILURE_LIMIT < 1 or LOGIN_ADDRESS_FAILURE_LIMIT < 1 or LOGIN_ACCOUNT_FAILURE_LIMIT < 0:
    raise ImproperlyConfigured(
        "LOGIN_FAILURE_LIMIT and LOGIN_ADDRESS_FAILURE_LIMIT must be at least 1, LOGIN_ACCOUNT_FAILURE_LIMIT "
        "0 (off) or more."
    )
AXES_ENABLED = env_bool("LOGIN_LOCKOUT_ENABLED", True)
AXES_HANDLER = "config.logins.LoginAttemptsHandler"
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address", "username"]
# A failure during a lockout does not restart it: the Retry-After we give stays true.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A success forgets that username's failures from that address (config.logins).
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "config.security.client_key"
AXES_LOCKOUT_CALLABLE = "config.security.login_locked_response"
AXES_HTTP_RESPONSE_CODE = 429

METRICS_TOKEN = env("METRICS_TOKEN")
LOG_FORMAT = env("LOG_FORMAT", "plain" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "dramatiq": {"level": env("DRAMATIQ_LOG_LEVEL", "WARNING")},
        # One structured line per request comes from config.observability; Django's own is noise.
        "django.server": {"level": "WARNING"},
        "postflow.request": {"level": env("REQUEST_LOG_LEVEL", "INFO" if not TESTING else "WARNING")},
    },
}

# --- Telling creators: notifications, live events, webhooks, appeals (DESIGN.md §10) ---------------
ASGI_APPLICATION = "config.asgi.application"
# The event log: a Redis Stream per user when Redis is configured, in-process otherwise.
EVENTS_REDIS_URL = env("EVENTS_REDIS_URL", REDIS_URL)
EVENTS_REDIS_PREFIX = env("EVENTS_REDIS_PREFIX", "pf:events:")
EVENTS_STREAM_MAXLEN = env_int("EVENTS_STREAM_MAXLEN", 10_000)
# Redis connections one web process may hold for SSE streams (one per held stream).
EVENTS_REDIS_MAX_CONNECTIONS = env_int("EVENTS_REDIS_MAX_CONNECTIONS", 10_000)
EVENTS_RETENTION_SECONDS = env_int("EVENTS_RETENTION_SECONDS", 24 * 3600)
EVENTS_HEARTBEAT_SECONDS = env_float("EVENTS_HEARTBEAT_SECONDS", 15.0)
EVENTS_TICKET_SECONDS = env_int("EVENTS_TICKET_SECONDS", 60)
# An SSE connection is closed after this long (the client reconnects with Last-Event-ID), so that
# connections spread over web processes again after a deploy.
EVENTS_MAX_CONNECTION_SECONDS = env_int("EVENTS_MAX_CONNECTION_SECONDS", 3600)
# Media progress events: at most one per this many seconds per running medium.
EVENTS_PROGRESS_INTERVAL_SECONDS = env_float("EVENTS_PROGRESS_INTERVAL_SECONDS", 0.25)

WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 5.0)
WEBHOOK_RETRY_HOURS = env_int("WEBHOOK_RETRY_HOURS", 24)
WEBHOOK_MAX_FAILURES = env_int("WEBHOOK_MAX_FAILURES", 20)
WEBHOOK_FAILURE_SPACING_SECONDS = env_int("WEBHOOK_FAILURE_SPACING_SECONDS", 60)

APPEAL_WINDOW_DAYS = env_int("APPEAL_WINDOW_DAYS", 30)


def _email_settings(url: str) -> dict:
    """``EMAIL_URL`` → Django's email settings: ``console://`` (default), ``locmem://``,
    ``file:///path``, ``smtp://user:pass@host:587`` (STARTTLS with ``?tls=1`` or ``smtp+tls://``),
    ``smtps://…`` (implicit TLS)."""
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("console", "consolemail"):
        return {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}
    if scheme == "locmem":
        return {"EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend"}
    if scheme == "file":
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": parts.path,
        }
    if scheme in ("smtp", "smtp+tls", "smtps"):
        query = parse_qs(parts.query)
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": parts.hostname or "localhost",
            "EMAIL_PORT": parts.port or (465 if scheme == "smtps" else 587 if scheme == "smtp+tls" else 25),
            "EMAIL_HOST_USER": unquote(parts.username or ""),
            "EMAIL_HOST_PASSWORD": unquote(parts.password or ""),
            "EMAIL_USE_TLS": scheme == "smtp+tls" or query.get("tls", ["0"])[0] in ("1", "true"),
            "EMAIL_USE_SSL": scheme == "smtps",
            "EMAIL_TIMEOUT": 10,
        }
    raise ImproperlyConfigured(
        f"EMAIL_URL: unsupported scheme {scheme!r} (console, locmem, file, smtp, smtps)."
    )


globals().update(_email_settings(env("EMAIL_URL", "console://") or "console://"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "Postflow <noreply@localhost>")
