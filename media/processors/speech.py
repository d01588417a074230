"""The ``transcript`` processor (issue 17): decode the speech of an audio or video file to 16 kHz
mono PCM with the safe ffmpeg runner, transcribe it with the configured provider (``media.speech``),
and return the plain text and WebVTT captions as variants. Pure: files in, dataclasses out.

A file without an audio track, or whose audio holds no speech, gives no variants and says why in
``metadata.skipped`` (the runner records the transcript as ready with nothing to show)."""

from __future__ import annotations

import time
from pathlib import Path

import ffmpeg as ffmpeg_python
from django.conf import settings

from media import speech
from media.speech import captions

from . import ffmpeg
from .base import ProcessingError, Processor, ProcessorResult, StepLog, VariantFile

CAPTIONS = "captions"  # variant name: the WebVTT file
TEXT = "text"  # variant name: the plain text, one cue per line
DEMUXERS = ffmpeg.VIDEO_DEMUXERS | ffmpeg.AUDIO_DEMUXERS


class SpeechProcessor(Processor):
    key = "speech"
    kind = "transcript"

    def process(self, *, source: Path, workdir: Path, steps: StepLog) -> ProcessorResult:
        workdir.mkdir(parents=True, exist_ok=True)
        with steps.step("probe", source=source) as s:
            probe = ffmpeg.ffprobe(source, demuxers=DEMUXERS, kind="audio or video")
            audio = next((st for st in probe.get("streams", []) if st.get("codec_type") == "audio"), None)
            duration = ffmpeg.parse_duration(probe, audio) or 0.0
            s.output = {"has_audio": audio is not None, "duration_s": round(duration, 2)}
        if audio is None:
            steps.skip("transcribe", "no audio track")
            return ProcessorResult(
                mime_type="text/plain", metadata={"speech": False, "skipped": "no audio track"}
            )
        budget = ffmpeg.time_budget(
            duration, factor=settings.SPEECH_TIMEOUT_FACTOR, minimum=settings.SPEECH_TIMEOUT_MIN_SECONDS
        )
        pcm = workdir / "speech.wav"
        with steps.step("decode", sample_rate=speech.SAMPLE_RATE) as s:
            graph = ffmpeg.safe_input(source, demuxer=ffmpeg.demuxer_of(probe, DEMUXERS))["a:0"]
            graph = ffmpeg_python.output(
                graph,
                str(pcm),
                f="wav",
                ac=1,
                ar=speech.SAMPLE_RATE,
                map_metadata="-1",
                **{"c:a": "pcm_s16le"},
            )
            run = ffmpeg.run_graph(
                graph,
                timeout=budget,
                outputs=[pcm],
                on_progress=lambda block: steps.progress(s, **ffmpeg.progress_values(block, duration)),
                failure_message="We could not decode the sound of this file for its transcript.",
            )
            s.output.update(elapsed_s=round(run.elapsed_s, 2), bytes=pcm.stat().st_size)
        language = settings.SPEECH_LANGUAGE
        with steps.step("transcribe", provider=speech.provider_name(), language=language) as s:
            started = time.process_time()
            wall = time.perf_counter()
            try:
                transcript = speech.get_speech_provider().transcribe(pcm, language=language)
            except speech.SpeechError as exc:
                raise ProcessingError(f"Transcription failed: {exc}", retryable=exc.retryable) from exc
            cpu = time.process_time() - started
            audio_s = (pcm.stat().st_size - 44) / (2 * speech.SAMPLE_RATE)
            s.output = {
                "cues": len(transcript.segments),
                "words": len(transcript.words or []),
                "audio_s": round(audio_s, 2),
                "cpu_s": round(cpu, 2),
                "wall_s": round(time.perf_counter() - wall, 2),
                "realtime_factor": round(audio_s / cpu, 2) if cpu > 0 else None,
            }
        pcm.unlink(missing_ok=True)
        facts = {
            "language": transcript.language,
            "provider": transcript.provider,
            "model": transcript.model,
            "source_duration_seconds": round(duration, 3),
        }
        if not transcript.has_speech:
            return ProcessorResult(
                mime_type="text/plain", metadata={"speech": False, "skipped": "no speech detected", **facts}
            )
        vtt = workdir / "captions.vtt"
        vtt.write_text(captions.render_webvtt(transcript.segments, language=transcript.language), "utf-8")
        txt = workdir / "transcript.txt"
        txt.write_text(captions.plain_text(transcript.segments), "utf-8")
        return ProcessorResult(
            duration_seconds=round(duration, 3) or None,
            mime_type="text/plain",
            metadata={
                "speech": True,
                **facts,
                "segments": [list(seg.as_tuple()) for seg in transcript.segments],
                "word_count": len(transcript.text.split()),
            },
            variants=[
                VariantFile(
                    name=CAPTIONS, path=vtt, mime_type="text/vtt", extra={"language": transcript.language}
                ),
                VariantFile(name=TEXT, path=txt, mime_type="text/plain"),
            ],
        )
