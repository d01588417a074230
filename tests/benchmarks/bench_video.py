"""Video processing benchmark (not collected by pytest). Run: ``python tests/benchmarks/bench_video.py``.

Inputs are generated into a temp dir: a 12 s 1080p30 H.264/AAC MP4 that a phone could have made
(High profile, yuv420p, a keyframe every second, under the 1080p rung's 6 Mb/s cap: its 1080p rung is a
remux) and the very same streams in MKV (not remuxable: every rung is encoded). Figures:

* video_hls_vs_mp4_ladder_ratio: one ffmpeg run writing today's ladder (HLS for 360/720/1080 + the
  720p MP4 fallback through tee + poster) vs the MP4-only ladder of before (360/720/1080 MP4s + poster),
  same input, bare ffmpeg (issue 12: ≤ 1.1);
* video_remux_speedup: VideoProcessor.process() on the MKV (full ladder encode) vs on the MP4 (top
  rung remuxed, keyframe probe included) (issue 12: ≥ 2);
* video_single_ms / video_multi_ms: one ffmpeg run writing 720p + 360p MP4 + poster vs one run per output;
* video_realtime_factor: seconds of video per wall second of process() on the MKV;
* video_overhead_vs_bare_ffmpeg_ratio: that process() vs the same ffmpeg command run bare.

Medians of 3 interleaved trials; the ``best_`` figures (fastest trial) show what a quiet machine does.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DURATION = 12
RUNS = 3


def run(report: Callable[[str, float, str], None]) -> None:
    from dataclasses import replace

    from django.conf import settings

    from media.processors import ffmpeg
    from media.processors.base import StepLog
    from media.processors.video import LADDER, VideoProcessor, plan_renditions, probe_video, transcode_graph

    # A timing run on a shared machine must not trip the per-video time budget.
    settings.VIDEO_TIMEOUT_MIN_SECONDS = max(settings.VIDEO_TIMEOUT_MIN_SECONDS, 3600)
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        tmp = Path(tmp)
        web, mkv = _make_inputs(tmp)
        info = probe_video(mkv)
        peak_rss = 0.0

        def bare(graph) -> float:
            nonlocal peak_rss
            seconds, rss = _timed(ffmpeg.graph_command(graph))
            peak_rss = max(peak_rss, rss)
            return seconds

        def fresh(name: str) -> Path:
            path = tmp / name
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            return path

        # A/B pairs are interleaved (order alternating) so load from other processes hits both sides.
        two = [replace(r, mp4=True) for r in plan_renditions(info, ladder=LADDER[:2])]
        full = plan_renditions(info)  # HLS for every rung + the 720p MP4 fallback
        mp4_ladder = [replace(r, mp4=True) for r in full]  # before HLS: an MP4 per rung

        def single() -> float:
            return bare(transcode_graph(info, mkv, two, fresh("single"), hls=False)[0])

        def per_output() -> float:
            out = fresh("multi")
            total = sum(bare(transcode_graph(info, mkv, [r], out, poster=False, hls=False)[0]) for r in two)
            return total + bare(transcode_graph(info, mkv, [], out, poster=True, hls=False)[0])

        def process(source: Path) -> float:
            nonlocal peak_rss
            steps = StepLog()
            started = time.perf_counter()
            result = VideoProcessor().process(source=source, workdir=fresh("process"), steps=steps)
            elapsed = time.perf_counter() - started
            transcode = next(s for s in steps.as_list() if s["name"] == "transcode")
            peak_rss = max(peak_rss, transcode["output"]["peak_rss_mb"])
            if source == web and not result.metadata["remuxed"]:
                raise RuntimeError("the compliant MP4 was not remuxed")
            return elapsed

        times = _interleaved(
            {
                "mp4_ladder": lambda: bare(
                    transcode_graph(info, mkv, mp4_ladder, fresh("mp4"), hls=False)[0]
                ),
                "hls_ladder": lambda: bare(transcode_graph(info, mkv, full, fresh("bare"))[0]),
                "single": single,
                "multi": per_output,
                "process": lambda: process(mkv),
                "remux": lambda: process(web),
            }
        )
        med = {name: statistics.median(values) for name, values in times.items()}
        report("video_mp4_ladder_ms", med["mp4_ladder"] * 1000, "ms")
        report("video_hls_ladder_ms", med["hls_ladder"] * 1000, "ms")
        report("video_hls_vs_mp4_ladder_ratio", med["hls_ladder"] / med["mp4_ladder"], "ratio")
        report("video_single_ms", med["single"] * 1000, "ms")
        report("video_multi_ms", med["multi"] * 1000, "ms")
        report("video_single_vs_multi_ratio", med["single"] / med["multi"], "ratio")
        report("video_process_ms", med["process"] * 1000, "ms")
        report("video_realtime_factor", DURATION / med["process"], "x")
        report("video_overhead_vs_bare_ffmpeg_ratio", med["process"] / med["hls_ladder"], "ratio")
        report("video_remux_process_ms", med["remux"] * 1000, "ms")
        report("video_remux_speedup", med["process"] / med["remux"], "x")
        report("video_peak_child_rss_mb", peak_rss, "MiB")
        report(
            "video_best_hls_vs_mp4_ladder_ratio", min(times["hls_ladder"]) / min(times["mp4_ladder"]), "ratio"
        )
        report("video_best_remux_speedup", min(times["process"]) / min(times["remux"]), "x")
        report("video_best_realtime_factor", DURATION / min(times["process"]), "x")
        report("host_loadavg_1m_at_end", os.getloadavg()[0], "")


def _interleaved(measures: dict[str, Callable[[], float]], runs: int = RUNS) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in measures}
    names = list(measures)
    for trial in range(runs):
        for name in names if trial % 2 == 0 else reversed(names):
            times[name].append(measures[name]())
    return times


def _make_inputs(tmp: Path) -> tuple[Path, Path]:
    web, mkv = tmp / "web.mp4", tmp / "same.mkv"
    gen = ["ffmpeg", "-hide_banner", "-v", "error", "-y"]
    subprocess.run(
        [
            *gen,
            *("-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={DURATION}"),
            *("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={DURATION}"),
            *("-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-pix_fmt", "yuv420p"),
            *("-profile:v", "high", "-g", "30", "-maxrate", "5000k", "-bufsize", "10000k"),
            *("-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(web)),
        ],
        check=True,
    )
    subprocess.run([*gen, "-i", str(web), "-c", "copy", str(mkv)], check=True)
    return web, mkv


def _timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and the child's peak RSS (MiB) of one bare command."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    rows: list[tuple[str, float, str]] = []

    def report(name: str, value: float, unit: str) -> None:
        rows.append((name, value, unit))
        print(f"  {name} = {value:.3f} {unit}", flush=True)

    run(report)
    print(f"\n{'metric':<40} {'value':>12}  unit")
    for name, value, unit in rows:
        print(f"{name:<40} {value:>12.3f}  {unit}")


if __name__ == "__main__":
    main()
