"""Audio processing benchmark (not collected by pytest). Run: ``python tests/benchmarks/bench_audio.py``.

Input: a generated 3-minute 44.1 kHz stereo WAV (pink noise under a tone). Figures:

* audio_realtime_factor: seconds of audio per wall second of AudioProcessor.process()
  (probe, loudnorm pass 1 + waveform + cover in one run, pass 2 to AAC);
* audio_waveform_ms: a standalone streaming waveform run (decode to 8 kHz mono PCM, fold into buckets);
* audio_waveform_in_pass1_ms: what adding the waveform to the loudnorm measuring run costs.
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
DURATION = 180
RUNS = 5


def run(report: Callable[[str, float, str], None]) -> None:
    from media.processors import ffmpeg
    from media.processors.audio import WAVEFORM_RATE, AudioProcessor, WaveformPeaks, loudnorm_filter
    from media.processors.base import StepLog

    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        tmp = Path(tmp)
        wav = tmp / "talk.wav"
        subprocess.run(
            [
                *("ffmpeg", "-hide_banner", "-v", "error", "-y"),
                *("-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude=0.1:duration={DURATION}"),
                *("-f", "lavfi", "-i", f"sine=frequency=220:duration={DURATION}"),
                *("-filter_complex", "amix=inputs=2,aformat=channel_layouts=stereo"),
                *("-ar", "44100", str(wav)),
            ],
            check=True,
        )
        peak_rss = 0.0

        def process() -> float:
            nonlocal peak_rss
            steps = StepLog()
            workdir = tmp / "work"
            started = time.perf_counter()
            AudioProcessor().process(source=wav, workdir=workdir, steps=steps)
            elapsed = time.perf_counter() - started
            for step in steps.as_list():
                peak_rss = max(peak_rss, step["output"].get("peak_rss_mb") or 0)
            return elapsed

        wave_graph = f"aformat=sample_fmts=s16:sample_rates={WAVEFORM_RATE}:channel_layouts=mono"

        def waveform_only() -> float:
            peaks = WaveformPeaks(buckets=800, expected_samples=DURATION * WAVEFORM_RATE)
            started = time.perf_counter()
            ffmpeg.run_ffmpeg(
                source=wav,
                demuxer="wav",
                args=["-map", "0:a:0", "-af", wave_graph, "-c:a", "pcm_s16le", "-f", "s16le", "pipe:1"],
                timeout=60,
                on_stdout=peaks.feed,
            )
            assert len(peaks.peaks()) == 800
            return time.perf_counter() - started

        def pass1(with_waveform: bool) -> float:
            nonlocal peak_rss
            if with_waveform:
                peaks = WaveformPeaks(buckets=800, expected_samples=DURATION * WAVEFORM_RATE)
                graph = f"[0:a:0]asplit=2[m][w];[m]{loudnorm_filter()}[measured];[w]{wave_graph}[wave]"
                args = ["-filter_complex", graph, "-map", "[measured]", "-f", "null", "-"]
                args += ["-map", "[wave]", "-c:a", "pcm_s16le", "-f", "s16le", "pipe:1"]
                on_stdout = peaks.feed
            else:
                args = ["-map", "0:a:0", "-af", loudnorm_filter(), "-f", "null", "-"]
                on_stdout = None
            started = time.perf_counter()
            result = ffmpeg.run_ffmpeg(source=wav, demuxer="wav", args=args, timeout=120, on_stdout=on_stdout)
            peak_rss = max(peak_rss, result.peak_rss_mb)
            return time.perf_counter() - started

        # Interleaved (order alternating per trial) so load from other processes hits every figure alike.
        measures = {
            "process": process,
            "waveform": waveform_only,
            "pass1": lambda: pass1(False),
            "pass1_waveform": lambda: pass1(True),
        }
        times: dict[str, list[float]] = {name: [] for name in measures}
        for trial in range(RUNS):
            for name in measures if trial % 2 == 0 else reversed(list(measures)):
                times[name].append(measures[name]())
        med = {name: statistics.median(values) for name, values in times.items()}
        report("audio_process_ms", med["process"] * 1000, "ms")
        report("audio_realtime_factor", DURATION / med["process"], "x")
        report("audio_best_realtime_factor", DURATION / min(times["process"]), "x")
        report("audio_waveform_ms", med["waveform"] * 1000, "ms")
        report("audio_pass1_ms", med["pass1"] * 1000, "ms")
        report("audio_waveform_in_pass1_ms", (med["pass1_waveform"] - med["pass1"]) * 1000, "ms")
        report("audio_peak_child_rss_mb", peak_rss, "MiB")
        report("host_loadavg_1m_at_end", os.getloadavg()[0], "")


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
