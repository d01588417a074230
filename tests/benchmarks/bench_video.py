"""Video processing benchmark (not collected by pytest). Run: ``python tests/benchmarks/bench_video.py``.

Inputs are generated into a temp dir: a 30 s 1080p30 H.264/AAC MP4 (web-ready, so its 1080p is a
remux) and the very same streams in MKV (not web-ready: everything is encoded). Figures:

* video_single_ms / video_multi_ms: one ffmpeg run writing 720p + 360p + poster vs one run per output;
* video_realtime_factor: seconds of video per wall second of VideoProcessor.process() on the MKV
  (1080p + 720p + 360p + poster + poster thumbnail, probe included);
* video_overhead_vs_bare_ffmpeg_ratio: that process() vs the same ffmpeg command run bare;
* video_remux_speedup: process() on the MKV vs on the web-ready MP4.

Medians of 3 interleaved trials; the ``best_`` figures (fastest trial) show what a quiet machine does.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DURATION = 30
RUNS = 3


def run(report: Callable[[str, float, str], None]) -> None:
    from media.processors import ffmpeg
    from media.processors.base import StepLog
    from media.processors.video import LADDER, VideoProcessor, plan_renditions, probe_video, transcode_graph

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
            path.mkdir(exist_ok=True)
            for child in path.rglob("*"):
                if child.is_file():
                    child.unlink()
            return path

        # A/B pairs are interleaved (order alternating) so load from other processes hits both sides.
        two = plan_renditions(info, ladder=LADDER[:2])
        full = plan_renditions(info)

        def single() -> float:
            return bare(transcode_graph(info, mkv, two, fresh("single"))[0])

        def per_output() -> float:
            out = fresh("multi")
            total = sum(bare(transcode_graph(info, mkv, [r], out, poster=False)[0]) for r in two)
            return total + bare(transcode_graph(info, mkv, [], out, poster=True)[0])

        def process(source: Path) -> float:
            nonlocal peak_rss
            steps = StepLog()
            started = time.perf_counter()
            VideoProcessor().process(source=source, workdir=fresh("process"), steps=steps)
            elapsed = time.perf_counter() - started
            transcode = next(s for s in steps.as_list() if s["name"] == "transcode")
            peak_rss = max(peak_rss, transcode["output"]["peak_rss_mb"])
            return elapsed

        times = _interleaved(
            {
                "single": single,
                "multi": per_output,
                "bare": lambda: bare(transcode_graph(info, mkv, full, fresh("bare"))[0]),
                "process": lambda: process(mkv),
                "remux": lambda: process(web),
            }
        )
        med = {name: statistics.median(values) for name, values in times.items()}
        report("video_single_ms", med["single"] * 1000, "ms")
        report("video_multi_ms", med["multi"] * 1000, "ms")
        report("video_single_vs_multi_ratio", med["single"] / med["multi"], "ratio")
        report("video_process_ms", med["process"] * 1000, "ms")
        report("video_bare_ffmpeg_ms", med["bare"] * 1000, "ms")
        report("video_realtime_factor", DURATION / med["process"], "x")
        report("video_overhead_vs_bare_ffmpeg_ratio", med["process"] / med["bare"], "ratio")
        report("video_remux_process_ms", med["remux"] * 1000, "ms")
        report("video_remux_speedup", med["process"] / med["remux"], "x")
        report("video_peak_child_rss_mb", peak_rss, "MiB")
        report("video_best_single_vs_multi_ratio", min(times["single"]) / min(times["multi"]), "ratio")
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
