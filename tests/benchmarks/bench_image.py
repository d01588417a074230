"""Benchmark: the production ImageProcessor against a naive Pillow baseline.

Not collected by pytest. Run ``python tests/benchmarks/bench_image.py`` or call ``run(report)`` with a
``report(name, value, unit)`` callback. Every measurement runs in a fresh child process, so peaks do
not mix: the child reports its own high-water mark (VmHWM; ``ru_maxrss`` would include the parent's,
as Linux keeps it across fork and exec). The cases run interleaved, ``ROUNDS`` times, one warm-up
and one measured run per child, so load from other processes hits every case alike; times are
medians of wall-clock (and, less noisy on a busy machine, CPU) milliseconds.

For the ratios both sides make the same three JPEGs (2048 and 1024 longest side, a 320 square crop)
from the same file; ours goes through ``ImageProcessor.process`` with those three specs. The default
production set (WebP large/medium/small/thumb, blurhash, ...) is timed as well.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 5
CASES = ("naive", "ours", "ours_default")
TARGETS = {"image_12mp_vs_naive_ratio": 0.6, "image_24mp_vs_naive_ratio": 0.3, "image_24mp_peak_rss_mb": 100}
SAME_SIZES = (("large", 2048, False), ("medium", 1024, False), ("thumb", 320, True))
JPEG_OPTIONS = {"quality": 82, "optimize": True}  # the same for both sides


# --- inputs ------------------------------------------------------------------------------------------


def _photo(size: tuple[int, int]):
    """Photo-like pixels: smooth gradients, a coarse texture and fine sensor-like noise."""
    from PIL import Image, ImageChops

    w, h = size
    channels = []
    for i, gradient in enumerate(
        (Image.linear_gradient("L"), Image.radial_gradient("L"), Image.linear_gradient("L").rotate(90))
    ):
        base = gradient.resize(size, Image.Resampling.BICUBIC)
        texture = Image.effect_noise((w // 16 + i, h // 16 + i), 40).resize(size, Image.Resampling.BICUBIC)
        grain = Image.effect_noise(size, 10)
        mixed = ImageChops.add(base, texture, scale=1.0, offset=-128)
        channels.append(ImageChops.add(mixed, grain, scale=1.0, offset=-128))
    return Image.merge("RGB", channels)


def make_inputs(folder: Path) -> dict[str, Path]:
    from PIL import Image

    paths = {
        "12mp": folder / "photo_12mp.jpg",
        "24mp": folder / "photo_24mp.jpg",
        "png": folder / "photo_12mp.png",
    }
    photo12 = _photo((4000, 3000))
    exif = Image.Exif()
    exif[0x010F] = "BenchPhone"
    exif[0x0112] = 6  # held sideways, as phones store portrait shots
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)})
    photo12.save(paths["12mp"], quality=90, exif=exif)
    photo12.save(paths["png"], compress_level=3)
    del photo12
    _photo((6000, 4000)).save(paths["24mp"], quality=90)
    return paths


# --- the two contenders ---------------------------------------------------------------------------------


def naive(source: Path, workdir: Path) -> None:
    """What one writes first: decode everything, resize every variant from the original, save."""
    from PIL import Image, ImageOps

    with Image.open(source) as img:
        img = ImageOps.exif_transpose(img, in_place=False) if img.getexif().get(0x0112, 1) != 1 else img
        if img.mode != "RGB":
            img = img.convert("RGB")
        for name, size, crop in SAME_SIZES:
            if crop:
                out = ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS)
            else:
                scale = size / max(img.size)
                out = img.resize(
                    (round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS
                )
            out.save(workdir / f"{name}.jpg", "JPEG", **JPEG_OPTIONS)


def _same_size_specs():
    from media.processors.image_specs import CenterSquare, FitLongestSide, JpegFallbackSpec

    specs = []
    for name, size, crop in SAME_SIZES:
        processors = [CenterSquare(size) if crop else FitLongestSide(size)]
        attrs = {"name": name, "size": size, "crop": crop, "processors": processors, "options": JPEG_OPTIONS}
        specs.append(type(f"Bench{name.title()}Spec", (JpegFallbackSpec,), attrs))
    return tuple(specs)


def ours(source: Path, workdir: Path, *, same_sizes: bool) -> None:
    from media.processors.base import StepLog
    from media.processors.image import ImageProcessor

    if same_sizes:
        processor = ImageProcessor(specs=_same_size_specs(), jpeg_fallback=False)
    else:
        processor = ImageProcessor()
    processor.process(source=source, workdir=workdir, steps=StepLog())


# --- child process -------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(case: str, source: Path, runs: int) -> dict:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from media.processors import image  # noqa: F401  (import cost is not part of a run)

    funcs = {
        "baseline": lambda src, wd: None,
        "naive": naive,
        "ours": lambda src, wd: ours(src, wd, same_sizes=True),
        "ours_default": lambda src, wd: ours(src, wd, same_sizes=False),
    }
    func = funcs[case]
    wall, cpu = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs + 1):
            workdir = Path(tmp) / f"run{i}"
            workdir.mkdir()
            started, cpu_started = time.perf_counter(), time.process_time()
            func(source, workdir)
            if i:  # the first run warms caches and is not counted
                wall.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - cpu_started) * 1000)
    return {"wall_ms": wall, "cpu_ms": cpu, "peak_rss_mb": _peak_rss_mb()}


def _measure(case: str, source: Path, runs: int = 1) -> dict:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", case, str(source), str(runs)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=900,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure_interleaved(source: Path) -> dict[str, dict]:
    merged = {case: {"wall_ms": [], "cpu_ms": [], "peak_rss_mb": 0.0} for case in CASES}
    for _ in range(ROUNDS):
        for case in CASES:
            got = _measure(case, source)
            merged[case]["wall_ms"] += got["wall_ms"]
            merged[case]["cpu_ms"] += got["cpu_ms"]
            merged[case]["peak_rss_mb"] = max(merged[case]["peak_rss_mb"], got["peak_rss_mb"])
    return merged


# --- entry points --------------------------------------------------------------------------------------


def run(report) -> dict[str, float]:
    results: dict[str, float] = {}

    def emit(name: str, value: float, unit: str) -> None:
        results[name] = value
        report(name, value, unit)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(Path(tmp))
        baseline = _measure("baseline", inputs["12mp"])
        emit("image_child_baseline_rss_mb", round(baseline["peak_rss_mb"], 1), "MB")
        for label, source in inputs.items():
            measured = _measure_interleaved(source)
            med = {case: statistics.median(m["wall_ms"]) for case, m in measured.items()}
            cpu = {case: statistics.median(m["cpu_ms"]) for case, m in measured.items()}
            prefix = f"image_{label}"
            emit(f"{prefix}_ms", round(med["ours"], 1), "ms")
            emit(f"{prefix}_naive_ms", round(med["naive"], 1), "ms")
            emit(f"{prefix}_vs_naive_ratio", round(med["ours"] / med["naive"], 3), "x")
            emit(f"{prefix}_cpu_ms", round(cpu["ours"], 1), "ms")
            emit(f"{prefix}_naive_cpu_ms", round(cpu["naive"], 1), "ms")
            emit(f"{prefix}_vs_naive_cpu_ratio", round(cpu["ours"] / cpu["naive"], 3), "x")
            emit(f"{prefix}_default_set_ms", round(med["ours_default"], 1), "ms")
            emit(f"{prefix}_peak_rss_mb", round(measured["ours"]["peak_rss_mb"], 1), "MB")
            emit(f"{prefix}_naive_peak_rss_mb", round(measured["naive"]["peak_rss_mb"], 1), "MB")
            emit(f"{prefix}_default_set_peak_rss_mb", round(measured["ours_default"]["peak_rss_mb"], 1), "MB")
            for case, m in measured.items():
                rows.append(
                    (
                        label,
                        case,
                        med[case],
                        cpu[case],
                        min(m["wall_ms"]),
                        max(m["wall_ms"]),
                        m["peak_rss_mb"],
                    )
                )

    print(
        f"\n{'input':6} {'case':13} {'median ms':>10} {'cpu ms':>8} {'min':>8} {'max':>8} {'peak RSS MB':>12}"
    )
    for label, case, med_ms, cpu_ms, lo, hi, rss in rows:
        print(f"{label:6} {case:13} {med_ms:10.1f} {cpu_ms:8.1f} {lo:8.1f} {hi:8.1f} {rss:12.1f}")
    print(f"(child process baseline RSS after django.setup(): {results['image_child_baseline_rss_mb']} MB;")
    print(f" {ROUNDS} interleaved rounds, one measured run per child, medians)")
    for name, target in TARGETS.items():
        verdict = "ok" if results[name] <= target else "MISSED"
        print(f"target {name} <= {target}: {results[name]} {verdict}")
    return results


def _print_report(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name}={value} {unit}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))))
    else:
        run(_print_report)
