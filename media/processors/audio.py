"""Audio: probe, refuse early, EBU R128 loudness normalisation to AAC (.m4a), waveform peaks, cover art.

Two ffmpeg runs over the untrusted file:

1. measure: ``loudnorm`` in analysis mode, and in the same decode the 8 kHz mono PCM for the
   waveform (streamed from stdout into a fixed number of buckets, never held whole in memory),
   and the embedded cover picture, if any, copied out;
2. encode: ``loudnorm`` with the measured values (linear gain) to AAC 128k with ``+faststart``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python
import numpy as np
from django.conf import settings

from . import ffmpeg
from .base import (
    ExtraMedia,
    MediaTooLarge,
    ProcessingError,
    Processor,
    ProcessorResult,
    StepLog,
    StepRecord,
    UnsupportedMedia,
    VariantFile,
)
from .image_specs import M4A

TARGET_I = -16.0  # LUFS, integrated loudness (what podcasts and most streaming players target)
TARGET_TP = -1.5  # dBTP, true peak
TARGET_LRA = 11.0  # LU, loudness range
AUDIO_BITRATE = "128k"
MAX_SAMPLE_RATE = 48_000
WAVEFORM_RATE = 8_000
WAVEFORM_OVERSAMPLE = 8  # fine buckets per final bucket, so a duration that lied still fills the waveform

_MIME_BY_DEMUXER = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mov": "audio/mp4",
    "aac": "audio/aac",
    "aiff": "audio/aiff",
    "asf": "audio/x-ms-wma",
    "caf": "audio/x-caf",
    "w64": "audio/x-w64",
    "wv": "audio/x-wavpack",
    "amr": "audio/amr",
    "avi": "audio/x-msvideo",
    "mpegts": "audio/mp2t",
    "mpeg": "audio/x-mpeg-ps",
    "flv": "audio/x-flv",
}
_COVER_EXTENSIONS = {"mjpeg": ("jpg", "image/jpeg"), "png": ("png", "image/png")}


@dataclass(frozen=True)
class AudioInfo:
    container: str
    demuxer: str
    mime_type: str
    duration: float
    codec: str
    sample_rate: int | None
    channels: int | None
    channel_layout: str | None
    bitrate: int | None
    cover_stream: int | None  # absolute index of the attached picture
    cover_codec: str | None

    def facts(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "codec": self.codec,
            "duration": self.duration,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "channel_layout": self.channel_layout,
            "bitrate": self.bitrate,
            "has_cover": self.cover_stream is not None,
        }


def probe_audio(source: Path) -> AudioInfo:
    """ffprobe ``source`` through the safe runner and refuse anything that is not audio."""
    probe = ffmpeg.ffprobe(source, demuxers=ffmpeg.AUDIO_DEMUXERS, kind="audio")
    demuxer = ffmpeg.demuxer_of(probe, ffmpeg.AUDIO_DEMUXERS)
    streams = probe.get("streams", [])
    pictures = [
        s for s in streams if s.get("codec_type") == "video" and s.get("disposition", {}).get("attached_pic")
    ]
    if any(s.get("codec_type") == "video" and s not in pictures for s in streams):
        raise UnsupportedMedia("This file is a video; upload it as a video instead.")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if audio is None:
        raise UnsupportedMedia("This file has no sound in it.")
    duration = ffmpeg.parse_duration(probe, audio)
    if duration is None:
        raise UnsupportedMedia("This audio's length could not be read; it may be damaged or incomplete.")
    mime_type = _MIME_BY_DEMUXER.get(demuxer, "application/octet-stream")
    if demuxer == "matroska":
        mime_type = "audio/webm" if audio.get("codec_name") in ("opus", "vorbis") else "audio/x-matroska"
    cover = pictures[0] if pictures else None
    return AudioInfo(
        container=probe["format"]["format_name"],
        demuxer=demuxer,
        mime_type=mime_type,
        duration=duration,
        codec=audio.get("codec_name", "unknown"),
        sample_rate=_int(audio.get("sample_rate")),
        channels=_int(audio.get("channels")),
        channel_layout=audio.get("channel_layout"),
        bitrate=_int(probe["format"].get("bit_rate")) or _int(audio.get("bit_rate")),
        cover_stream=int(cover["index"]) if cover else None,
        cover_codec=cover.get("codec_name") if cover else None,
    )


def check_limits(info: AudioInfo) -> None:
    max_duration = settings.AUDIO_MAX_DURATION_SECONDS
    if info.duration > max_duration:
        raise MediaTooLarge(
            f"Audio is {ffmpeg.human_duration(info.duration)}; "
            f"the limit is {ffmpeg.human_duration(max_duration)}."
        )


class WaveformPeaks:
    """Streams s16le mono PCM into ``buckets`` peak values in [0, 1] (1 = the loudest bucket).

    Memory stays at a few thousand numbers whatever the length: samples are folded into fine
    buckets as they arrive, and the fine buckets into the final ones at the end, so a duration
    that was off does not leave the waveform half empty or cut it short.
    """

    def __init__(self, *, buckets: int, expected_samples: int):
        self.buckets = buckets
        self.fine_size = max(1, expected_samples // (buckets * WAVEFORM_OVERSAMPLE))
        self.samples = 0
        self._fine: list[np.ndarray] = []
        self._pending = np.empty(0, dtype=np.int32)
        self._odd_byte = b""

    def feed(self, chunk: bytes) -> None:
        data = self._odd_byte + chunk
        usable = len(data) - len(data) % 2
        self._odd_byte = data[usable:]
        samples = np.abs(np.frombuffer(data, dtype="<i2", count=usable // 2).astype(np.int32))
        self.samples += samples.size
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        whole = samples.size - samples.size % self.fine_size
        if whole:
            self._fine.append(samples[:whole].reshape(-1, self.fine_size).max(axis=1))
        self._pending = samples[whole:].copy()

    def peaks(self) -> list[float]:
        parts = [*self._fine, self._pending.max(keepdims=True)] if self._pending.size else self._fine
        fine = np.concatenate(parts) if parts else np.zeros(1, dtype=np.int32)
        if fine.size >= self.buckets:
            out = np.zeros(self.buckets, dtype=np.int32)
            np.maximum.at(out, np.arange(fine.size) * self.buckets // fine.size, fine)
        else:
            out = fine[np.arange(self.buckets) * fine.size // self.buckets]
        loudest = int(out.max())
        values = out / loudest if loudest else out.astype(float)
        return [round(float(v), 3) for v in values]


def loudnorm_options(measured: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``loudnorm`` filter's options: analysis mode, or the second pass with the first pass's figures."""
    options: dict[str, Any] = {"I": TARGET_I, "TP": TARGET_TP, "LRA": TARGET_LRA, "print_format": "json"}
    if measured:
        options.update(
            measured_I=_clamp(measured["input_i"], -99, 0),
            measured_TP=_clamp(measured["input_tp"], -99, 99),
            measured_LRA=_clamp(measured["input_lra"], 0, 99),
            measured_thresh=_clamp(measured["input_thresh"], -99, 0),
            offset=_clamp(measured["target_offset"], -99, 99),
            linear="true",
        )
    return options


def loudnorm_filter(measured: dict[str, str] | None = None) -> str:
    """``loudnorm_options`` as one filter string (``-af`` syntax), e.g. for the benchmarks."""
    return "loudnorm=" + ":".join(f"{k}={v}" for k, v in loudnorm_options(measured).items())


_EBUR128 = {
    "input_i": r"Integrated loudness:\s+I:\s+(-?[\d.]+|-inf) LUFS",
    "input_thresh": r"Integrated loudness:\s+I:\s+\S+ LUFS\s+Threshold:\s+(-?[\d.]+|-inf) LUFS",
    "input_lra": r"Loudness range:\s+LRA:\s+(-?[\d.]+) LU",
    "input_tp": r"True peak:\s+Peak:\s+(-?[\d.]+|-inf) dBFS",
}


def parse_ebur128(log: str) -> dict[str, str]:
    """The summary ffmpeg's EBU R128 meter prints at the end, in loudnorm's field names."""
    summary = log[log.rfind("Summary:") :]
    measured = {}
    for key, pattern in _EBUR128.items():
        match = re.search(pattern, summary)
        if not match:
            raise ProcessingError("We could not measure this audio's loudness; it may be damaged.")
        measured[key] = match.group(1)
    if _float(measured["input_i"]) <= -70.0:  # the meter's absolute gate: nothing audible (silence)
        measured["input_i"] = "-inf"
    measured["target_offset"] = "0.0"
    return measured


def linear_gain(measured: dict[str, str]) -> float | None:
    """The gain that brings the integrated loudness to the target, if it keeps the true peak under
    its limit (what loudnorm's linear mode does); None when only dynamic normalisation can."""
    gain = TARGET_I - _float(measured["input_i"])
    return round(gain, 2) if _float(measured["input_tp"]) + gain <= TARGET_TP else None


def parse_loudnorm(log: str) -> dict[str, str]:
    """The JSON block loudnorm prints (at log level info) when it finishes."""
    marker = log.rfind("[Parsed_loudnorm")
    blocks = re.findall(r"\{[^{}]*\}", log[marker:] if marker >= 0 else log)
    if not blocks:
        raise ProcessingError("We could not measure this audio's loudness; it may be damaged.")
    return json.loads(blocks[-1])


class AudioProcessor(Processor):
    key = "audio"
    kind = "audio"

    def process(self, *, source: Path, workdir: Path, steps: StepLog) -> ProcessorResult:
        with steps.step("probe", source=source) as s:
            info = probe_audio(source)
            s.output = info.facts()
            check_limits(info)
        budget = ffmpeg.time_budget(
            info.duration,
            factor=settings.AUDIO_TIMEOUT_FACTOR,
            minimum=settings.AUDIO_TIMEOUT_MIN_SECONDS,
        )
        deadline = time.monotonic() + budget
        workdir.mkdir(parents=True, exist_ok=True)
        buckets = settings.AUDIO_WAVEFORM_BUCKETS

        with steps.step("measure", buckets=buckets, budget_s=round(budget, 1)) as s:
            waveform = WaveformPeaks(buckets=buckets, expected_samples=int(info.duration * WAVEFORM_RATE))
            # The EBU R128 meter measures what loudnorm's analysis pass does (I, LRA, threshold, true
            # peak) in a sixth of the time: loudnorm always works at 192 kHz (3 min: 5.5 s vs 0.9 s).
            media = ffmpeg.safe_input(source, demuxer=info.demuxer)
            sound = media["a:0"].filter_multi_output("asplit")
            meter = sound[0].filter("ebur128", peak="true", framelog="verbose")
            wave = sound[1].filter(
                "aformat", sample_fmts="s16", sample_rates=WAVEFORM_RATE, channel_layouts="mono"
            )
            nodes = [
                ffmpeg_python.output(meter, "-", f="null"),
                ffmpeg_python.output(wave, "pipe:1", f="s16le", **{"c:a": "pcm_s16le"}),
            ]
            cover = None
            if info.cover_stream is not None:
                extension, mime = _COVER_EXTENSIONS.get(info.cover_codec, ("png", "image/png"))
                cover = workdir / f"cover.{extension}"
                codec = "copy" if info.cover_codec in _COVER_EXTENSIONS else "png"
                nodes.append(
                    ffmpeg_python.output(
                        media[str(info.cover_stream)],
                        str(cover),
                        f="image2",
                        update=1,
                        map_metadata="-1",
                        **{"c:v": codec, "frames:v": 1},
                    )
                )
            run = _run(
                ffmpeg_python.merge_outputs(*nodes),
                info,
                deadline,
                steps,
                s,
                outputs=[cover] if cover else [],
                on_stdout=waveform.feed,
            )
            measured = parse_ebur128(run.stderr)
            peaks = waveform.peaks()
            s.output.update(
                {k: measured.get(k) for k in ("input_i", "input_tp", "input_lra", "input_thresh")},
                waveform_samples=waveform.samples,
                elapsed_s=round(run.elapsed_s, 2),
                peak_rss_mb=round(run.peak_rss_mb, 1),
            )

        output = workdir / "audio.m4a"
        silent = not math.isfinite(_float(measured.get("input_i")))
        gain = None if silent else linear_gain(measured)
        if not silent and gain is None:
            # Only dynamic normalisation fits (a linear gain would clip). loudnorm's dynamic mode needs
            # the offset its own analysis pass computes, so run that pass for these files only.
            with steps.step("measure_dynamic") as s:
                analysis = ffmpeg.safe_input(source, demuxer=info.demuxer)["a:0"]
                analysis = analysis.filter("loudnorm", **loudnorm_options())
                analysis = ffmpeg_python.output(analysis, "-", f="null")
                run = _run(analysis, info, deadline, steps, s, outputs=[])
                measured = parse_loudnorm(run.stderr)
                s.output.update(
                    target_offset=measured.get("target_offset"), elapsed_s=round(run.elapsed_s, 2)
                )
        with steps.step("encode", normalise=not silent, linear_gain_db=gain) as s:
            sample_rate = min(info.sample_rate or MAX_SAMPLE_RATE, MAX_SAMPLE_RATE)
            channels = 1 if info.channels == 1 else 2
            # loudnorm works (and outputs) at 192 kHz; an explicit layout avoids a negotiation failure
            # ffmpeg 5.1 has after loudnorm, and downmixes surround for the web.
            layout = "mono" if channels == 1 else "stereo"
            sound = ffmpeg.safe_input(source, demuxer=info.demuxer)["a:0"]
            if gain is not None:
                # linear: the whole file moves by one gain, dynamics intact
                sound = sound.filter("volume", f"{gain}dB")
            elif not silent:
                # dynamic: loudnorm's limiter keeps the true peak
                sound = sound.filter("loudnorm", **loudnorm_options(measured))
            sound = sound.filter("aformat", sample_rates=sample_rate, channel_layouts=layout)
            encode = ffmpeg_python.output(
                sound,
                str(output),
                f="mp4",
                movflags="+faststart",
                map_metadata="-1",
                map_chapters="-1",
                vn=None,
                sn=None,
                dn=None,
                **{"c:a": "aac", "b:a": AUDIO_BITRATE},
            )
            run = _run(encode, info, deadline, steps, s, outputs=[output])
            if silent:
                result = {}
            elif gain is not None:
                result = {
                    "output_i": str(_float(measured["input_i"]) + gain),
                    "output_tp": str(_float(measured["input_tp"]) + gain),
                    "normalization_type": "linear",
                }
            else:
                result = parse_loudnorm(run.stderr)
            s.output.update(
                output_i=result.get("output_i"),
                output_tp=result.get("output_tp"),
                normalization_type=result.get("normalization_type", "none (silent)"),
                elapsed_s=round(run.elapsed_s, 2),
                peak_rss_mb=round(run.peak_rss_mb, 1),
            )

        extra_media = []
        if cover is not None and cover.exists() and cover.stat().st_size:
            with steps.step("cover") as s:
                thumbnail = cover_media(cover, mime, workdir, s.output)
            if thumbnail is not None:
                extra_media.append(thumbnail)

        size = output.stat().st_size
        return ProcessorResult(
            duration_seconds=round(info.duration, 3),
            mime_type=info.mime_type,
            metadata=info.facts()
            | {
                "loudness": {
                    "target_i": TARGET_I,
                    "target_tp": TARGET_TP,
                    "target_lra": TARGET_LRA,
                    "input_i": _float_or_none(measured.get("input_i")),
                    "input_tp": _float_or_none(measured.get("input_tp")),
                    "input_lra": _float_or_none(measured.get("input_lra")),
                    "output_i": _float_or_none(result.get("output_i")),
                    "output_tp": _float_or_none(result.get("output_tp")),
                    "normalization_type": result.get("normalization_type", "none"),
                },
                "waveform": peaks,
            },
            variants=[
                VariantFile(
                    name=M4A,
                    path=output,
                    mime_type="audio/mp4",
                    size_bytes=size,
                    extra={
                        "codec": "aac",
                        "bitrate": round(size * 8 / info.duration),
                        "sample_rate": sample_rate,
                        "channels": channels,
                    },
                )
            ],
            extra_media=extra_media,
        )


def cover_media(cover: Path, mime_type: str, workdir: Path, notes: dict[str, Any]) -> ExtraMedia | None:
    """The embedded cover as a new thumbnail Media, processed by ImageProcessor when that module exists.

    A cover the image pipeline refuses is dropped (None): it must not sink the audio itself."""
    try:
        from media.processors.image import ImageProcessor
    except ImportError:
        notes["via"] = "none (media.processors.image not available)"
        return ExtraMedia(kind="thumbnail", path=cover, mime_type=mime_type)
    image_steps = StepLog()
    image_workdir = workdir / "cover-image"
    image_workdir.mkdir(exist_ok=True)
    notes["via"] = "ImageProcessor"
    try:
        result = ImageProcessor().process(source=cover, workdir=image_workdir, steps=image_steps)
    except ProcessingError as exc:
        notes["dropped"] = f"{type(exc).__name__}: {exc}"
        return None
    finally:
        notes["image_steps"] = [step["name"] for step in image_steps.as_list()]
    return ExtraMedia(kind="thumbnail", path=cover, mime_type=mime_type, result=result)


def _run(
    graph: Any,
    info: AudioInfo,
    deadline: float,
    steps: StepLog,
    record: StepRecord,
    *,
    outputs: list[Path],
    on_stdout: Callable[[bytes], None] | None = None,
) -> ffmpeg.RunResult:
    """One ffmpeg run within what is left of the shared time budget, its progress shown in ``record``."""
    try:
        return ffmpeg.run_graph(
            graph,
            timeout=max(0.001, deadline - time.monotonic()),
            outputs=outputs,
            on_stdout=on_stdout,
            on_progress=lambda block: steps.progress(record, **ffmpeg.progress_values(block, info.duration)),
            loglevel="info",  # loudnorm prints its figures at this level
            failure_message=(
                "We could not decode this audio; it may be damaged or use a codec we do not support."
            ),
        )
    except ffmpeg.FFmpegFailed as exc:
        record.output["ffmpeg_log"] = exc.log[-2000:]
        raise


def _clamp(value: Any, low: float, high: float) -> float:
    number = _float(value)
    if not math.isfinite(number):
        number = low if number < 0 else high
    return round(min(high, max(low, number)), 2)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _float_or_none(value: Any) -> float | None:
    number = _float(value)
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
