"""The contract between the media runner (ORM side) and the processors (files in, dataclasses out).

A processor never touches the database or storage: the runner downloads the original to a local
path, gives the processor a scratch directory and a ``StepLog``, and stores what comes back.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ProcessingError(Exception):
    """A file we refuse or cannot process. ``str(err)`` is shown to the creator: make it actionable.

    ``retryable`` is False for problems with the file itself (retrying gives the same answer) and True
    for transient ones (a timeout under load, a full disk).
    """

    code = "processing_failed"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None):
        super().__init__(message)
        if code:
            self.code = code
        if retryable is not None:
            self.retryable = retryable


class UnsupportedMedia(ProcessingError):
    code = "unsupported_media_type"


class MediaTooLarge(ProcessingError):
    code = "media_too_large"


class DecodeBudgetExceeded(MediaTooLarge):
    """The file would cost more decoding work (pixels × frames) than one job may spend.

    Checked from headers before anything is decoded (issue 9 row 5: a 23 KB GIF with a 7000×7000
    canvas and 999 frames took minutes of CPU). Retrying gives the same answer, so it is never retried.
    """

    code = "decode_budget_exceeded"
    retryable = False


class ProcessingTimeout(ProcessingError):
    """A run went past its time budget. Not retried (issue 9 row 5): the budget already scales with
    the file's length, so a retry would burn the same worker time again and fail the same way."""

    code = "processing_timeout"
    retryable = False


@dataclass
class VariantFile:
    """One derived file; ``name`` is its key in Media.variants (``small``, ``720p``, ``poster``…).

    ``files``: companions stored in the same storage folder as ``path``, under their own file names
    (an HLS master playlist's media playlists, init segments and segments, which it names by relative
    URIs). The runner stores them before ``path`` and records only ``path``'s key in Media.variants.
    """

    name: str
    path: Path
    mime_type: str
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    files: list[VariantFile] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.size_bytes is None and self.path.exists():
            self.size_bytes = self.path.stat().st_size


@dataclass
class ExtraMedia:
    """A new, secondary Media row the runner creates (e.g. an audio file's embedded cover art)."""

    kind: str  # "thumbnail" | "transcript"
    path: Path
    mime_type: str
    result: ProcessorResult | None = None


@dataclass
class ProcessorResult:
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    blurhash: str | None = None
    mime_type: str | None = None  # the sniffed/verified type of the original, if the processor refines it
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-safe facts for Media.metadata
    variants: list[VariantFile] = field(default_factory=list)
    extra_media: list[ExtraMedia] = field(default_factory=list)


@dataclass
class StepRecord:
    name: str
    status: str = "running"  # running | ok | failed | skipped
    duration_ms: float = 0.0
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 1),
            "input": self.input,
            "output": self.output,
            "error": self.error,
        }


HEARTBEAT_SECONDS = 1.0


class StepLog:
    """Collects named steps for ProcessorRun.steps. ``on_change`` lets the runner persist progress.

    Long steps call ``progress`` (ffmpeg's progress pipe) or ``beat`` (frame and variant loops) as
    they go; ``on_change`` then runs at least every ``heartbeat_seconds`` while work goes on, and at
    most that often for a running step, so the runner can heartbeat the row (issue 9 row 10: a
    healthy long job must never look stuck). ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        on_change: Callable[[list[dict[str, Any]]], None] | None = None,
        *,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.steps: list[StepRecord] = []
        self._on_change = on_change
        self.heartbeat_seconds = heartbeat_seconds
        self._clock = clock
        self._last_change = clock()

    @contextmanager
    def step(self, name: str, **inputs: Any) -> Iterator[StepRecord]:
        record = StepRecord(name=name, input=_jsonable(inputs))
        self.steps.append(record)
        started = time.perf_counter()
        try:
            yield record
        except BaseException as exc:
            record.status = "failed"
            record.error = f"{type(exc).__name__}: {exc}"
            raise
        else:
            if record.status == "running":
                record.status = "ok"
        finally:
            record.duration_ms = (time.perf_counter() - started) * 1000
            record.output = _jsonable(record.output)
            self.changed()

    def skip(self, name: str, reason: str) -> None:
        self.steps.append(StepRecord(name=name, status="skipped", output={"reason": reason}))
        self.changed()

    def progress(self, record: StepRecord, **values: Any) -> None:
        """Update a running step's output (e.g. ffmpeg's out_time); the runner sees it within
        ``heartbeat_seconds`` (calls in between only update the record)."""
        record.output.update(_jsonable(values))
        self.beat()

    def beat(self) -> None:
        """Call often from a long loop: tells the runner the job is alive, at most every
        ``heartbeat_seconds``; cheap when it is not yet time."""
        if self._clock() - self._last_change >= self.heartbeat_seconds:
            self.changed()

    def changed(self) -> None:
        self._last_change = self._clock()
        if self._on_change:
            try:
                self._on_change(self.as_list())
            except Exception:  # progress is best effort; never fail processing for it
                traceback.print_exc()

    def as_list(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.steps]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return value.name
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class Processor:
    """Base class: one subclass per media kind, registered in ``media.processors.PROCESSORS``."""

    key: str = ""
    kind: str = ""

    def process(self, *, source: Path, workdir: Path, steps: StepLog) -> ProcessorResult:
        raise NotImplementedError
