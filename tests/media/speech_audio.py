"""Synthetic speech for the speech tests and benchmark: Debian's ``espeak-ng`` says each sentence,
and ffmpeg joins them with known silences, so the test knows when each sentence starts and ends.

The US English female variant at 140 words a minute is the espeak-ng voice PocketSphinx's US English
model hears best (measured: the clean sentences below have a word error rate near 0.2)."""

from __future__ import annotations

import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

VOICE = "en-us+f2"
SPEED = 140  # words per minute
RATE = 22050  # espeak-ng's output rate

CLEAN = [
    "The weather today is sunny and warm.",
    "We are going to the park this afternoon.",
    "Thank you for listening to my voice note.",
]
ABUSIVE = ["You are so dumb and stupid."]


@dataclass(frozen=True)
class Spoken:
    text: str
    start: float  # seconds from the start of the file
    end: float


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("ffmpeg") is not None


def _say(text: str, path: Path) -> float:
    subprocess.run(["espeak-ng", "-v", VOICE, "-s", str(SPEED), "-w", str(path), text], check=True)
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def speech_file(
    sentences: list[str], dest: Path, *, gap: float = 1.0, lead: float = 0.5, video: bool = False
) -> list[Spoken]:
    """Write ``dest`` (its extension picks the container: .m4a, .mp3, .wav, or .mp4 with a test
    picture when ``video``) saying ``sentences`` with ``gap`` seconds of silence between them and
    ``lead`` before the first. Returns where each sentence is, in seconds."""
    work = dest.parent / f".{dest.stem}-parts"
    work.mkdir(parents=True, exist_ok=True)
    spoken: list[Spoken] = []
    inputs: list[str] = []
    filters: list[str] = []
    at = lead
    for index, text in enumerate(sentences):
        part = work / f"s{index}.wav"
        length = _say(text, part)
        spoken.append(Spoken(text, round(at, 3), round(at + length, 3)))
        inputs += ["-i", str(part)]
        delay = int(round(at * 1000))
        filters.append(f"[{index}:a]aresample={RATE},adelay={delay}:all=1[a{index}]")
        at += length + gap
    mix = "".join(f"[a{i}]" for i in range(len(sentences)))
    filters.append(f"{mix}amix=inputs={len(sentences)}:normalize=0,apad=whole_dur={at:.3f}[out]")
    cmd = ["ffmpeg", "-y", "-loglevel", "error", *inputs]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=15:duration={at:.3f}"]
    cmd += ["-filter_complex", ";".join(filters), "-map", "[out]"]
    if video:
        cmd += ["-map", f"{len(sentences)}:v", "-c:v", "libx264", "-preset", "ultrafast"]
        cmd += ["-pix_fmt", "yuv420p"]
    cmd += ["-ac", "1", "-t", f"{at:.3f}", str(dest)]
    subprocess.run(cmd, check=True)
    shutil.rmtree(work, ignore_errors=True)
    return spoken


def words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c in " '" else " " for c in text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by word-level edit distance."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, row[0] = row[:], i
        for j in range(1, len(hyp) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ref[i - 1] != hyp[j - 1]))
    return row[-1] / max(1, len(ref))
