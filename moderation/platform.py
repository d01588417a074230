"""The one accessor for PlatformSettings: cached, created from the environment on first use."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

from moderation.models import PlatformSettings

_CACHE_KEY = "postflow:platform-settings:v1"


def _defaults() -> dict:
    return {
        "moderation_mode": settings.MODERATION_MODE,
        "ai_review_threshold": settings.AI_REVIEW_THRESHOLD,
        "ai_revoke_threshold": settings.AI_REVOKE_THRESHOLD,
        "report_threshold": settings.REPORT_THRESHOLD,
        "post_processing_enabled": settings.POST_PROCESSING_ENABLED,
        "processor_event_trigger_media_enabled": settings.PROCESSOR_EVENT_TRIGGER_MEDIA_ENABLED,
        "media_sweep_schedule_enabled": settings.MEDIA_SWEEP_SCHEDULE_ENABLED,
        "media_sweep_cron": settings.MEDIA_SWEEP_CRON,
    }


def get_platform_settings(*, fresh: bool = False) -> PlatformSettings:
    if not fresh:
        cached = cache.get(_CACHE_KEY)
        if cached is not None:
            return cached
    obj, _ = PlatformSettings.objects.get_or_create(pk=PlatformSettings.singleton_id, defaults=_defaults())
    cache.set(_CACHE_KEY, obj, settings.PLATFORM_SETTINGS_CACHE_SECONDS)
    return obj


def invalidate_platform_settings() -> None:
    cache.delete(_CACHE_KEY)
