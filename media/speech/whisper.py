"""The optional higher-quality provider: faster-whisper (MIT; CTranslate2 Whisper models) on CPU.

Not installed by default (``pip install faster-whisper``) and imported only when selected. It reads
a model folder the operator puts on disk (``SPEECH_MODEL_PATH``, e.g. a converted
``Systran/faster-whisper-small`` folder with ``model.bin``); it never downloads a model at run time
(``local_files_only``)."""

from __future__ import annotations

import threading
from pathlib import Path

from .base import SpeechError, SpeechProvider, SpeechUnavailable, Transcript, Word
from .captions import cues_from_words

DEFAULT_COMPUTE_TYPE = "int8"


def check_model_path(model_path: str) -> Path:
    """The model folder, or ``SpeechUnavailable`` saying what to put where."""
    if not model_path:
        raise SpeechUnavailable(
            "SPEECH_PROVIDER=faster-whisper needs SPEECH_MODEL_PATH: the folder of a CTranslate2 "
            "Whisper model (with model.bin) that you copied onto this machine. Nothing is downloaded."
        )
    folder = Path(model_path)
    if not (folder / "model.bin").is_file():
        raise SpeechUnavailable(
            f"SPEECH_MODEL_PATH={model_path!r} has no model.bin; put a CTranslate2 Whisper model folder "
            "there (faster-whisper's format). Nothing is downloaded at run time."
        )
    return folder


class FasterWhisperProvider(SpeechProvider):
    name = "faster-whisper"

    def __init__(self, *, model_path: str) -> None:
        self.folder = check_model_path(model_path)
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise SpeechUnavailable(
                "SPEECH_PROVIDER=faster-whisper but the faster-whisper package is not installed "
                "(pip install faster-whisper); or use the default, pocketsphinx."
            ) from exc
        self._model_class = WhisperModel
        self._model = None
        self._lock = threading.Lock()
        self.model = f"faster-whisper {self.folder.name}"

    def _loaded(self):
        with self._lock:
            if self._model is None:
                self._model = self._model_class(
                    str(self.folder), device="cpu", compute_type=DEFAULT_COMPUTE_TYPE, local_files_only=True
                )
            return self._model

    def transcribe(self, path: Path, *, language: str) -> Transcript:
        """Transcribe a 16 kHz mono WAV; ``language`` ``auto`` lets Whisper detect it."""
        try:
            segments, info = self._loaded().transcribe(
                str(path),
                language=None if language == "auto" else language.split("-")[0],
                word_timestamps=True,
                vad_filter=True,
            )
            words = [
                Word(round(w.start, 3), round(w.end, 3), w.word.strip(), round(float(w.probability), 4))
                for segment in segments
                for w in (segment.words or [])
                if w.word.strip()
            ]
        except Exception as exc:
            raise SpeechError(f"faster-whisper failed: {exc}", retryable=True) from exc
        cues = cues_from_words(words)
        return Transcript(
            text=" ".join(c.text for c in cues),
            language=getattr(info, "language", language) or language,
            segments=cues,
            words=words,
            provider=self.name,
            model=self.model,
        )
