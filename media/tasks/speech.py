"""The speech step (issue 17): transcribe an audio or video medium into its ``transcript`` medium.
Its own queue, ``media.speech``, so transcription never delays the video ladder or audio encodes;
sent by name (``media.processing.actor_name("transcript")``) when the parent is ready."""

import dramatiq
from django.conf import settings

from media import pipeline, processing

_LONGEST = max(settings.AUDIO_MAX_DURATION_SECONDS, settings.VIDEO_MAX_DURATION_SECONDS)


@dramatiq.actor(
    actor_name=processing.actor_name("transcript"),
    queue_name="media.speech",
    max_retries=max(settings.MEDIA_MAX_ATTEMPTS - 1, 0),
    min_backoff=2_000,
    max_backoff=120_000,
    # Decoding is bounded by the processor's ffmpeg budget; recognition runs at a few times real time.
    time_limit=int((_LONGEST * (settings.SPEECH_TIMEOUT_FACTOR + 1) + 600) * 1000),
)
def process_transcript_media(media_id: str) -> None:
    pipeline.run(media_id, kind="transcript")
