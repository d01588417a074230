"""One Dramatiq actor per media kind, each on its own queue (DESIGN.md §5). Actors only declare the
queue, retries and time limit: they take an id and call ``media.pipeline.run``. Nothing imports this
package to send: services send by actor name (``config.queueing``, ``media.processing.actor_name``)."""

from media.tasks.audio import process_audio_media
from media.tasks.image import process_image_media
from media.tasks.urls import media_revoke_post_urls  # noqa: F401  (declares the actor)
from media.tasks.video import process_livestream_recording_media, process_video_media

__all__ = [
    "process_audio_media",
    "process_image_media",
    "process_livestream_recording_media",
    "process_video_media",
]
