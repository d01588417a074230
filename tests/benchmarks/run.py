"""``make bench``: every benchmark, each against a baseline measured in the same run, printed as a
table and as ``BENCH <name> <value> <unit>`` lines (compare those across runs). Not part of the
test suite: timings belong here, not in assertions. ``--only image,audio`` runs a subset."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

SUITES = ["image", "video", "audio", "ai", "delivery", "pdq", "feed", "live"]
TARGETS = {  # name: (comparison, target) from the issues; printed next to the figure
    "image_12mp_vs_naive_ratio": ("<=", 0.6),
    "image_24mp_vs_naive_ratio": ("<=", 0.3),
    "image_24mp_peak_rss_mb": ("<=", 100),
    "video_single_vs_multi_ratio": ("<=", 0.95),
    "video_realtime_factor": (">=", 2.5),
    "video_overhead_vs_bare_ffmpeg_ratio": ("<=", 1.05),
    "video_remux_speedup": (">=", 2.0),
    "video_hls_vs_mp4_ladder_ratio": ("<=", 1.1),
    "audio_realtime_factor": (">=", 30),
    "speech_realtime_factor": (">=", 5),
    "delivery_feed_reload_bytes_ratio": ("<=", 0.01),
    "delivery_range_vs_storage_ratio": ("<=", 1.2),
    "delivery_range_200mb_vs_20mb_ratio": ("<=", 1.2),
    "delivery_resumable_sent_ratio": ("<=", 1.05),
    "delivery_complete_peak_rss_mb": ("<=", 150),
    "pdq_match_1m_ms": ("<=", 50),
    "pdq_caught_all_three_pct": (">=", 100),
    "pdq_false_matches_of_1000_unrelated": ("<=", 0),
    "feed_revisions_query_ratio": ("<=", 1.1),
    "feed_revisions_time_ratio": ("<=", 1.1),
    "live_latency_vs_segment_ratio": ("<=", 2.0),
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(SUITES))
    args = parser.parse_args()
    import django

    django.setup()
    figures: list[tuple[str, float, str]] = []

    def report(name: str, value: float, unit: str) -> None:
        figures.append((name, value, unit))
        print(f"BENCH {name} {value} {unit}", flush=True)

    cpus = os.cpu_count()
    for suite in [s.strip() for s in args.only.split(",") if s.strip()]:
        print(f"== {suite} (load average before: {_load()}, {cpus} CPUs)", flush=True)
        started = time.perf_counter()
        importlib.import_module(f"tests.benchmarks.bench_{suite}").run(report)
        took = time.perf_counter() - started
        print(f"   ({suite} took {took:.0f} s; load average after: {_load()})", flush=True)

    print("\n{:<42} {:>12} {:<10} {}".format("figure", "value", "unit", "target"))
    missed = []
    for name, value, unit in figures:
        target = ""
        if name in TARGETS:
            op, bound = TARGETS[name]
            ok = value <= bound if op == "<=" else value >= bound
            target = f"{op} {bound} {'ok' if ok else 'MISSED'}"
            if not ok:
                missed.append(name)
        print(f"{name:<42} {value:>12} {unit:<10} {target}")
    if missed:
        print(f"\nmissed targets: {', '.join(missed)} (timings are noisy on a busy machine: see `uptime`)")
    return 0


def _load() -> str:
    """The 1/5/15-minute load averages: every figure is reported with the machine's load."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
