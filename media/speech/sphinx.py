"""The default speech provider: CMU PocketSphinx (BSD-2-Clause) with the US English acoustic model,
language model and dictionary that its PyPI wheel ships (``pocketsphinx.get_model_path()``).
Nothing is downloaded. Its voice activity detector splits the audio into utterances; each is
decoded on its own, so cue timings come from the decoder's word segmentation."""

from __future__ import annotations

import math
import os
import threading
import wave
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .base import SAMPLE_RATE, SpeechError, SpeechProvider, SpeechUnavailable, Transcript, Word
from .captions import cues_from_words

LANGUAGES = ("en", "en-us")
FRAME_RATE = 100  # PocketSphinx's default -frate: frames per second
# Search breadth: at most this many active HMMs per frame (PocketSphinx's -maxhmmpf; its default is
# 30000). Measured with `make bench` on the synthetic 233 s talk (2-core machine, load ~1.5): 5000 keeps
# the word error rate (28.4 % vs 28.0 %) and is about 1.6x faster (8.7x vs 5.4x real time per CPU
# second); 3000 was faster still but lost words (35 %), as did narrower beams (57 %) or dropping the
# flat-lexicon second pass with it (31 %).
MAX_HMM_PER_FRAME = 5000
_FILLERS = {"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "++NOISE++", "++BREATH++"}


def _word(raw: str) -> str:
    """``will(2)`` (a pronunciation variant) -> ``will``."""
    return raw.split("(", 1)[0]


class PocketsphinxProvider(SpeechProvider):
    name = "pocketsphinx"

    def __init__(self) -> None:
        try:
            import pocketsphinx
        except ImportError as exc:  # pragma: no cover - it is in requirements/base.in
            raise SpeechUnavailable(
                "pocketsphinx is not installed; run `make deps`, or set SPEECH_PROVIDER=off."
            ) from exc
        self._ps = pocketsphinx
        try:
            package_version = version("pocketsphinx")
        except PackageNotFoundError:  # pragma: no cover
            package_version = "unknown"
        self.model = f"pocketsphinx {package_version} en-us"
        self._local = threading.local()  # a Decoder is not thread-safe: one per thread

    def _decoder(self):
        decoder = getattr(self._local, "decoder", None)
        if decoder is None or getattr(self._local, "pid", None) != os.getpid():
            self._ps.set_loglevel("FATAL")
            decoder = self._ps.Decoder(samprate=SAMPLE_RATE, maxhmmpf=MAX_HMM_PER_FRAME)
            self._local.decoder, self._local.pid = decoder, os.getpid()
        return decoder

    def transcribe(self, path: Path, *, language: str) -> Transcript:
        """Transcribe a 16 kHz mono 16-bit WAV file. Only English is available (the shipped model);
        another ``language`` raises a non-retryable ``SpeechError``."""
        if language.lower() not in LANGUAGES:
            raise SpeechError(
                f"The offline recogniser has an English model only; {language!r} is not supported. "
                "Use SPEECH_PROVIDER=faster-whisper with a multilingual model."
            )
        decoder = self._decoder()
        words: list[Word] = []
        utterances = 0
        try:
            with wave.open(str(path), "rb") as wav:
                if wav.getframerate() != SAMPLE_RATE or wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                    raise SpeechError("PocketSphinx needs 16 kHz mono 16-bit PCM.", retryable=False)
                segmenter = self._ps.Segmenter(sample_rate=SAMPLE_RATE)
                for speech in segmenter.segment(wav.getfp()):
                    utterances += 1
                    decoder.start_utt()
                    decoder.process_raw(speech.pcm, full_utt=True)
                    decoder.end_utt()
                    for seg in decoder.seg():
                        if seg.word in _FILLERS or seg.word.startswith("+"):
                            continue
                        words.append(
                            Word(
                                start=round(speech.start_time + seg.start_frame / FRAME_RATE, 3),
                                end=round(speech.start_time + (seg.end_frame + 1) / FRAME_RATE, 3),
                                text=_word(seg.word),
                                confidence=round(min(1.0, max(0.0, _probability(seg.prob))), 4),
                            )
                        )
        except (wave.Error, EOFError) as exc:
            raise SpeechError(f"Could not read the decoded audio: {exc}") from exc
        except RuntimeError as exc:  # the decoder's own failures
            raise SpeechError(f"PocketSphinx failed: {exc}", retryable=True) from exc
        cues = cues_from_words(words)
        return Transcript(
            text=" ".join(c.text for c in cues),
            language="en",
            segments=cues,
            words=words,
            provider=self.name,
            model=self.model,
            extra={"utterances": utterances},
        )


def _probability(value: float) -> float:
    """``Segment.prob`` is a posterior probability in recent releases and a log value in older ones."""
    if 0.0 <= value <= 1.0:
        return value
    try:
        return math.exp(value / 1e4) if value < 0 else 1.0
    except OverflowError:  # pragma: no cover
        return 0.0
