"""The one way Postflow runs ffprobe and ffmpeg on untrusted files.

Uploaded media is hostile until proven otherwise: a ``.avi`` can really be an HLS playlist whose
segments are ``file:///etc/passwd``. So every run here

* reads the input through the ``file`` protocol only (``-protocol_whitelist file``, ``file:`` URL);
* probes with ``-format_whitelist`` so only real media containers may open the file, and then
  forces that same demuxer with ``-f`` on ffmpeg, so hls, concat, image2 … can never be picked;
* runs in its own process group with a hard deadline: on timeout, on any exception, or when the
  worker interrupts the thread (dramatiq's ``TimeLimitExceeded``/``Shutdown`` are BaseExceptions)
  the whole group is killed, reaped, and partial outputs are deleted;
* on Linux, asks the kernel to SIGKILL the child when the thread that started it dies
  (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the worker never leaves ffmpeg running (issue 9 row 6).

Command lines for ffmpeg are built with ffmpeg-python's graph API (``safe_input`` → filters →
``ffmpeg.output``) and run with ``run_graph``, which checks every input node before it runs.
``run_ffmpeg`` keeps taking a ready argument list for callers that build their own.

This module holds the only ``Popen`` of ffmpeg/ffprobe in Postflow's processors.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python
from django.conf import settings
from ffmpeg.dag import topo_sort
from ffmpeg.nodes import InputNode, get_stream_spec_nodes

from .base import ProcessingError, ProcessingTimeout, UnsupportedMedia

# Demuxer names as ffmpeg spells them; ``-format_whitelist`` matches any name in a demuxer's list
# (e.g. "mov" admits "mov,mp4,m4a,3gp,3g2,mj2").
# The sniffer (media/sniff.py) knows exactly these containers; tests/media/test_sniff.py keeps the two
# in step. The kind follows the tracks, not the container: every video container may also hold sound
# only (a browser's WebM voice note, an .m4a, a .wma), so the audio processor reads them all too.
VIDEO_DEMUXERS = frozenset({"mov", "matroska", "avi", "mpegts", "flv", "ogg", "mpeg", "asf"})
AUDIO_DEMUXERS = VIDEO_DEMUXERS | frozenset({"mp3", "wav", "flac", "aac", "aiff", "caf", "w64", "wv", "amr"})
ANIMATION_DEMUXERS = frozenset({"gif"})  # animated images ffmpeg reads itself (image.py's mp4 variant)
ALL_DEMUXERS = VIDEO_DEMUXERS | AUDIO_DEMUXERS | ANIMATION_DEMUXERS
RAW_FRAMES = "pipe:0"  # the one non-file input: raw frames we decoded ourselves, fed on stdin

_STDERR_KEEP = 64 * 1024
_STDOUT_MAX = 16 * 1024 * 1024  # ffprobe JSON; more than this is not a real media file
_READ_CHUNK = 256 * 1024


class FFmpegFailed(ProcessingError):
    """ffmpeg/ffprobe exited non-zero. ``log`` holds the tail of its stderr for the step log."""

    def __init__(self, message: str, *, log: str = "", returncode: int | None = None):
        super().__init__(message)
        self.log = log
        self.returncode = returncode


@dataclass
class RunResult:
    returncode: int
    elapsed_s: float
    peak_rss_mb: float
    stderr: str  # the tail (last 64 KiB)


def ffprobe(source: Path, *, demuxers: Iterable[str], kind: str = "media") -> dict[str, Any]:
    """Probe ``source`` (streams + format as JSON) with only ``demuxers`` allowed to open it."""
    timeout = settings.FFPROBE_TIMEOUT_SECONDS
    out = bytearray()

    def collect(chunk: bytes) -> None:
        if len(out) + len(chunk) > _STDOUT_MAX:
            raise UnsupportedMedia(f"This file does not look like a {kind} file we can read.")
        out.extend(chunk)

    cmd = [
        settings.FFPROBE_BINARY,
        "-hide_banner",
        "-v",
        "error",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        ",".join(sorted(demuxers)),
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        "-i",
        _file_url(source),
    ]
    try:
        _run(cmd, timeout=timeout, on_stdout=collect)
    except FFmpegFailed as exc:
        raise UnsupportedMedia(f"This file is not a {kind} format we can read, or it is damaged.") from exc
    try:
        probe = json.loads(out.decode("utf-8", "replace"))
    except ValueError as exc:
        raise UnsupportedMedia(f"This file is not a {kind} format we can read.") from exc
    if not probe.get("format", {}).get("format_name"):
        raise UnsupportedMedia(f"This file is not a {kind} format we can read.")
    return probe


def probe_keyframes(source: Path, *, demuxer: str, stream_index: int) -> tuple[list[float], float]:
    """Presentation times (seconds) of the keyframe packets of one stream, sorted, and the file's
    start time; read by demuxing only (no decode). ``UnsupportedMedia`` if ffprobe cannot say."""
    if demuxer not in ALL_DEMUXERS:
        raise UnsupportedMedia("This file's container is not one we accept.")
    out = bytearray()

    def collect(chunk: bytes) -> None:
        if len(out) + len(chunk) > _STDOUT_MAX:
            raise UnsupportedMedia("This file has too many packets to inspect.")
        out.extend(chunk)

    cmd = [
        settings.FFPROBE_BINARY,
        *("-hide_banner", "-v", "error", "-protocol_whitelist", "file", "-f", demuxer),
        *("-select_streams", str(int(stream_index)), "-show_entries", "packet=pts_time,flags"),
        *("-show_entries", "format=start_time", "-of", "csv", "-i", _file_url(source)),
    ]
    times: list[float] = []
    start = 0.0
    try:  # csv, ~20 bytes a packet: "packet,1.001000,K__" … then "format,0.000000"
        _run(cmd, timeout=getattr(settings, "FFPROBE_TIMEOUT_SECONDS", 30), on_stdout=collect)
        for line in out.decode("ascii", "replace").splitlines():
            section, *values = line.strip().split(",")
            if section == "packet" and len(values) == 2 and "K" in values[1]:
                times.append(float(values[0]))
            elif section == "format" and values and values[0] not in ("", "N/A"):
                start = float(values[0])
    except (FFmpegFailed, ValueError) as exc:
        raise UnsupportedMedia("This video's keyframes could not be read.") from exc
    return sorted(times), start


def demuxer_of(probe: dict[str, Any], allowed: Iterable[str]) -> str:
    """The demuxer name to force with ``-f``: the first of the probed names that is whitelisted."""
    for name in probe["format"]["format_name"].split(","):
        if name in allowed:
            return name
    raise UnsupportedMedia("This file's container is not one we accept.")


def run_ffmpeg(
    *,
    source: Path,
    demuxer: str,
    args: Sequence[str],
    timeout: float,
    outputs: Iterable[Path] = (),
    input_options: Sequence[str] = (),
    on_progress: Callable[[dict[str, str]], None] | None = None,
    on_stdout: Callable[[bytes], None] | None = None,
    progress_interval: float = 1.0,
    loglevel: str = "error",
    failure_message: str = "We could not process this file; it may be damaged.",
) -> RunResult:
    """Run ffmpeg on one untrusted input with the safe input options, then ``args`` (filters, outputs).

    ``outputs`` are deleted if the run does not succeed. ``on_progress`` receives ffmpeg's
    ``-progress`` blocks (``out_time_us``, ``speed`` …), at most once per ``progress_interval``.
    """
    cmd = ffmpeg_command(
        source=source, demuxer=demuxer, args=args, input_options=input_options, loglevel=loglevel
    )
    outputs = list(outputs)
    try:
        return _run(
            cmd,
            timeout=timeout,
            on_stdout=on_stdout,
            on_progress=on_progress,
            progress_interval=progress_interval,
            failure_message=failure_message,
        )
    except BaseException:
        for path in outputs:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise


def ffmpeg_command(
    *,
    source: Path,
    demuxer: str,
    args: Sequence[str],
    input_options: Sequence[str] = (),
    loglevel: str = "error",
) -> list[str]:
    """The full ffmpeg command line ``run_ffmpeg`` executes (without ``-progress``)."""
    if demuxer not in ALL_DEMUXERS:
        raise UnsupportedMedia("This file's container is not one we accept.")
    return [
        settings.FFMPEG_BINARY,
        *_global_args(loglevel),
        *input_options,
        "-protocol_whitelist",
        "file",
        "-f",
        demuxer,
        "-i",
        _file_url(source),
        *args,
    ]


def _global_args(loglevel: str) -> list[str]:
    return ["-hide_banner", "-nostdin", "-nostats", "-y", "-v", loglevel]


def safe_input(source: Path, *, demuxer: str, **options: Any) -> Any:
    """An ffmpeg-python input node for one untrusted file: ``file:`` URL, ``file`` protocol only,
    and ``demuxer`` (from the allow-lists above) forced with ``-f``. ``options`` are further input
    options (e.g. ``t=5``)."""
    if demuxer not in ALL_DEMUXERS:
        raise UnsupportedMedia("This file's container is not one we accept.")
    return ffmpeg_python.input(_file_url(source), f=demuxer, protocol_whitelist="file", **options)


def raw_frames_input(*, width: int, height: int, fps: int, pix_fmt: str = "rgb24") -> Any:
    """An ffmpeg-python input node reading raw frames from stdin (give ``run_graph`` a ``stdin``)."""
    return ffmpeg_python.input(RAW_FRAMES, f="rawvideo", pix_fmt=pix_fmt, s=f"{width}x{height}", r=fps)


def graph_command(stream: Any, *, loglevel: str = "error", allow_stdin: bool = False) -> list[str]:
    """The argv for an ffmpeg-python output (or ``merge_outputs``) stream, after checking its inputs.

    Every input node must come from ``safe_input`` (``file:`` URL, ``protocol_whitelist=file``, an
    allow-listed demuxer) or, with ``allow_stdin``, from ``raw_frames_input``. Raises
    ``UnsupportedMedia`` otherwise, so no graph can open a URL or pick a demuxer by probing.
    """
    nodes, _ = topo_sort(get_stream_spec_nodes(stream))
    for node in nodes:
        if not isinstance(node, InputNode):
            continue
        options = node.kwargs
        filename = str(options.get("filename", ""))
        if filename == RAW_FRAMES and allow_stdin and options.get("format") == "rawvideo":
            continue
        if not (
            filename.startswith("file:/")
            and options.get("protocol_whitelist") == "file"
            and options.get("format") in ALL_DEMUXERS
        ):
            raise UnsupportedMedia("This file's container is not one we accept.")
    return [settings.FFMPEG_BINARY, *_global_args(loglevel), *ffmpeg_python.get_args(stream)]


def run_graph(
    stream: Any,
    *,
    timeout: float,
    outputs: Iterable[Path] = (),
    on_progress: Callable[[dict[str, str]], None] | None = None,
    on_stdout: Callable[[bytes], None] | None = None,
    stdin: Iterable[bytes] | None = None,
    progress_interval: float = 1.0,
    loglevel: str = "error",
    failure_message: str = "We could not process this file; it may be damaged.",
) -> RunResult:
    """Run an ffmpeg-python graph (see ``graph_command``) with the same guarantees as ``run_ffmpeg``.

    ``stdin`` yields raw frame bytes for a ``raw_frames_input``; it is written without blocking, so
    the deadline holds even when ffmpeg stops reading. ``outputs`` are deleted unless the run succeeds.
    """
    cmd = graph_command(stream, loglevel=loglevel, allow_stdin=stdin is not None)
    outputs = list(outputs)
    try:
        return _run(
            cmd,
            timeout=timeout,
            on_stdout=on_stdout,
            on_progress=on_progress,
            stdin=stdin,
            progress_interval=progress_interval,
            failure_message=failure_message,
        )
    except BaseException:
        for path in outputs:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise


def _file_url(path: Path) -> str:
    # An explicit file: URL so a name like "concat:x" or "-i" can never be read as a protocol or option.
    return "file:" + str(Path(path).resolve())


def _run(
    cmd: list[str],
    *,
    timeout: float,
    on_stdout: Callable[[bytes], None] | None = None,
    on_progress: Callable[[dict[str, str]], None] | None = None,
    stdin: Iterable[bytes] | None = None,
    progress_interval: float = 1.0,
    failure_message: str = "We could not process this file; it may be damaged.",
) -> RunResult:
    """Start ``cmd`` (the only Popen of ffmpeg/ffprobe), pump its pipes until it exits or the deadline.

    ``on_progress`` gets each ``-progress`` block at most every ``progress_interval`` seconds, and the
    last block again when ffmpeg prints none for that long (a long seek or a slow first frame), so the
    caller can heartbeat for as long as the child is alive.
    """
    started = time.monotonic()
    deadline = started + timeout
    if timeout <= 0:
        raise _timeout_error()
    progress_r = progress_w = None
    if on_progress is not None:
        progress_r, progress_w = os.pipe()
        cmd = [cmd[0], "-progress", f"pipe:{progress_w}", *cmd[1:]]
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if on_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so killpg reaches anything it spawns
            pass_fds=(progress_w,) if progress_w is not None else (),
            preexec_fn=_die_with_parent(),
        )
    except BaseException:
        if progress_r is not None:
            os.close(progress_r)
        raise
    finally:
        if progress_w is not None:
            os.close(progress_w)
    stderr_tail = bytearray()
    progress_buf = bytearray()
    block: dict[str, str] = {}
    last_block: dict[str, str] = {"progress": "continue"}
    last_report = time.monotonic()
    feed = iter(stdin) if stdin is not None else None
    pending = memoryview(b"")
    selector = selectors.DefaultSelector()
    try:
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "stdin")
        if proc.stdout is not None:
            selector.register(proc.stdout.fileno(), selectors.EVENT_READ, "stdout")
        selector.register(proc.stderr.fileno(), selectors.EVENT_READ, "stderr")
        if progress_r is not None:
            selector.register(progress_r, selectors.EVENT_READ, "progress")
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Deadline
            for key, _ in selector.select(min(remaining, 0.5)):
                if key.data == "stdin":
                    pending = _feed_stdin(proc, selector, feed, pending)
                    continue
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                if key.data == "stdout":
                    on_stdout(chunk)
                elif key.data == "stderr":
                    stderr_tail.extend(chunk)
                    del stderr_tail[:-_STDERR_KEEP]
                else:
                    progress_buf.extend(chunk)
                    *lines, rest = progress_buf.split(b"\n")
                    progress_buf[:] = rest
                    for line in lines:
                        name, _, value = line.decode("ascii", "replace").strip().partition("=")
                        block[name] = value
                        if name != "progress":
                            continue
                        last_block, block = block, {}
                        now = time.monotonic()
                        if value == "end" or now - last_report >= progress_interval:
                            last_report = now
                            on_progress(dict(last_block))
            if on_progress is not None and time.monotonic() - last_report >= progress_interval:
                last_report = time.monotonic()  # alive but silent: repeat the last figures
                on_progress(dict(last_block))
        returncode, peak_rss_mb = _reap(proc, deadline)
    except _Deadline:
        _kill(proc)
        raise _timeout_error() from None
    except BaseException:
        _kill(proc)
        raise
    finally:
        selector.close()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        if progress_r is not None:
            os.close(progress_r)
    log = stderr_tail.decode("utf-8", "replace")
    if returncode != 0:
        raise FFmpegFailed(failure_message, log=log[-4000:], returncode=returncode)
    return RunResult(
        returncode=returncode,
        elapsed_s=time.monotonic() - started,
        peak_rss_mb=peak_rss_mb,
        stderr=log,
    )


class _Deadline(Exception):
    pass


def _feed_stdin(
    proc: subprocess.Popen, selector: selectors.BaseSelector, feed: Iterator[bytes], pending: memoryview
) -> memoryview:
    """Write one piece of ``feed`` (as much as the pipe takes now) and return what is left of it, so
    the caller's loop checks its deadline between pieces. At the end of ``feed``, or when ffmpeg
    closed the pipe, stdin is closed."""
    fd = proc.stdin.fileno()
    try:
        while not pending:
            chunk = next(feed, None)
            if chunk is None:
                break
            pending = memoryview(chunk)
        if pending:
            return pending[os.write(fd, pending) :]
    except BlockingIOError:
        return pending
    except BrokenPipeError:
        pass  # ffmpeg stopped reading; its exit status and log say why
    selector.unregister(fd)
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    return memoryview(b"")


_PR_SET_PDEATHSIG = 1
_libc = None
if os.uname().sysname == "Linux":
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGKILL the child when its parent dies (Linux only).

    The kernel fires it when the *thread* that forked the child exits, not only the process. That is
    what we want here: Dramatiq's worker threads live as long as the worker process, and the thread
    that starts ffmpeg waits for it (or kills it) before it takes its next message, so the signal
    arrives only when the worker itself is gone, e.g. after ``kill -9`` or the OOM killer. If the
    parent died between fork and prctl, the child kills itself. Elsewhere: None (no-op).
    """
    if _libc is None:
        return None
    parent = os.getpid()
    prctl = _libc.prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _timeout_error() -> ProcessingTimeout:
    return ProcessingTimeout(
        "Processing took longer than its time budget and was stopped. "
        "Upload a shorter or smaller version of the file."
    )


def _reap(proc: subprocess.Popen, deadline: float) -> tuple[int, float]:
    """Wait for the child with the deadline still applying; return its exit code and peak RSS (MiB)."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss / 1024  # Linux reports KiB
        if time.monotonic() >= deadline:
            raise _Deadline
        time.sleep(0.01)


def _kill(proc: subprocess.Popen) -> None:
    """Kill the child's whole process group and reap it, so nothing keeps running or lingers as a zombie."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            proc.wait()


def progress_values(block: dict[str, str], duration: float | None) -> dict[str, Any]:
    """ffmpeg's progress block as the few numbers worth showing: out_time_s, speed, percent."""
    try:
        out_time_s = max(0.0, int(block.get("out_time_us") or block.get("out_time_ms") or 0) / 1_000_000)
    except ValueError:
        out_time_s = 0.0
    speed_text = (block.get("speed") or "").strip().rstrip("x")
    try:
        speed = float(speed_text)
    except ValueError:
        speed = None
    percent = None
    if duration:
        percent = 100.0 if block.get("progress") == "end" else min(100.0, out_time_s / duration * 100)
        percent = round(percent, 1)
    return {"out_time_s": round(out_time_s, 2), "speed": speed, "percent": percent}


def time_budget(duration: float, *, factor: float, minimum: float) -> float:
    """Seconds the whole processing of a ``duration`` long file may take."""
    return max(minimum, duration * factor)


def parse_duration(probe: dict[str, Any], stream: dict[str, Any] | None = None) -> float | None:
    for value in ((stream or {}).get("duration"), probe.get("format", {}).get("duration")):
        try:
            duration = float(value)
        except (TypeError, ValueError):
            continue
        if duration > 0:
            return duration
    return None


def human_duration(seconds: float) -> str:
    """3 → "3s", 4210 → "1h10m", 7200 → "2h"."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"
