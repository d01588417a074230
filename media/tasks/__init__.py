"""One Dramatiq actor per media kind, each on its own queue (DESIGN.md §5). Actors are thin: they
take an id and call the runner, which owns claiming, idempotency and the ProcessorRun log."""

from media.tasks.audio import process_audio_media
from media.tasks.image import process_image_media
from media.tasks.urls import media_revoke_post_urls  # noqa: F401  (declares the actor)
from media.tasks.video import process_video_media

ACTORS = {"image": process_image_media, "video": process_video_media, "audio": process_audio_media}


def actor_for_kind(kind: str):
    return ACTORS[kind]


__all__ = ["ACTORS", "actor_for_kind", "process_audio_media", "process_image_media", "process_video_media"]
