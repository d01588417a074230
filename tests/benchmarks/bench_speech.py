"""Speech-to-text benchmark (issue 17; not collected by pytest). Run: ``make bench`` or
``python tests/benchmarks/run.py --only speech``.

Input: about three minutes of synthetic speech (Debian's espeak-ng, the voice the tests use) made of
the sentences below repeated, with one second between them. Figures:

* speech_realtime_factor: seconds of audio per CPU second of the default provider (PocketSphinx is
  single-threaded, so this is "× real time on one core"); the model is loaded before timing;
* speech_wall_realtime_factor: the same per wall second (lower on a busy machine);
* speech_decode_vs_transcribe_ratio: the ffmpeg decode to 16 kHz PCM against the recognition;
* speech_wer_pct: word error rate of the whole transcript against the sentences said.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_SECONDS = 180

SENTENCES = [
    "The weather today is sunny and warm.",
    "We are going to the park this afternoon.",
    "Thank you for listening to my voice note.",
    "You are so dumb and stupid.",
    "Please remember to bring your umbrella.",
    "The children played in the garden until dinner time.",
    "I will see you at the station tomorrow morning.",
    "My brother bought a new car last week.",
    "The meeting starts at ten o'clock.",
    "She reads a book every night before bed.",
]


def run(report: Callable[[str, float, str], None]) -> None:
    from media import speech
    from media.processors.base import StepLog
    from media.processors.speech import SpeechProcessor
    from tests.media.speech_audio import have_espeak, speech_file, word_error_rate

    if not have_espeak():
        print("   skipped: espeak-ng is missing (make espeak)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-speech-") as tmp:
        tmp = Path(tmp)
        warm = tmp / "warm.wav"
        speech_file(SENTENCES[:1], warm)
        provider = speech.get_speech_provider("pocketsphinx")
        SpeechProcessor().process(source=warm, workdir=tmp / "warm-out", steps=StepLog())  # load the model

        said: list[str] = []
        spoken_seconds = 0.0
        while spoken_seconds < TARGET_SECONDS:
            said += SENTENCES
            spoken_seconds = len(said) * 3.2  # about 2.2 s a sentence plus the 1 s gap
        source = tmp / "talk.m4a"
        spoken = speech_file(said, source, gap=1.0)
        audio_seconds = spoken[-1].end + 1.0
        print(f"   {len(said)} sentences, {audio_seconds:.0f} s of speech")

        steps = StepLog()
        wall = time.perf_counter()
        result = SpeechProcessor().process(source=source, workdir=tmp / "out", steps=steps)
        wall = time.perf_counter() - wall
        by_step = {s["name"]: s for s in steps.as_list()}
        transcribe = by_step["transcribe"]["output"]
        decode_ms = by_step["decode"]["duration_ms"]
        heard = " ".join(segment[2] for segment in result.metadata.get("segments") or [])
        report("speech_audio_seconds", round(audio_seconds, 1), "s")
        report("speech_realtime_factor", round(transcribe["audio_s"] / transcribe["cpu_s"], 2), "x")
        report("speech_wall_realtime_factor", round(audio_seconds / wall, 2), "x")
        report(
            "speech_decode_vs_transcribe_ratio",
            round(decode_ms / (transcribe["wall_s"] * 1000), 3),
            "ratio",
        )
        report("speech_wer_pct", round(100 * word_error_rate(" ".join(said), heard), 1), "%")
        report("speech_cues", len(result.metadata.get("segments") or []), "cues")
        del provider
        shutil.rmtree(tmp / "out", ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    run(lambda name, value, unit: print(f"BENCH {name} {value} {unit}"))
