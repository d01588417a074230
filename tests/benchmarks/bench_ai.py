"""Benchmark of the local AI provider: model load, image throughput, video frame sampling.

Not collected by pytest. Run standalone with ``python tests/benchmarks/bench_ai.py`` or call
``run(report)`` where ``report(name, value, unit)`` records one figure.
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
IMAGE_BATCH = 8
IMAGE_BATCHES = 7
VIDEO_RUNS = 3

Report = Callable[[str, float, str], None]


def _setup_django() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()


def _photo(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A photo-like picture at the ``medium`` variant size: sky gradient, hills, texture, a few shapes."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    width, height = size
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    sky = np.stack([80 + 120 * y, 130 + 90 * y, 235 - 40 * y], axis=-1) * np.ones((1, width, 1))
    ground = np.stack([50 + 40 * y, 100 + 50 * y, 40 + 20 * y], axis=-1) * np.ones((1, width, 1))
    horizon = 0.5 + 0.1 * np.sin(x * (5 + seed % 7) + seed)
    pixels = np.where((y > horizon)[..., None], ground, sky) + rng.normal(0, 14, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        cx, cy, r = rng.integers(0, width), rng.integers(0, height), rng.integers(20, width // 6)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    image.filter(ImageFilter.GaussianBlur(1.2)).save(path, quality=85)
    return path


def _clip(path: Path) -> Path:
    """A 30 s 1080p H.264 clip encoded like a rendition (veryfast, default GOP)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30:duration=30"]
        + [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
    )
    return path


def run(report: Report) -> None:
    _setup_django()
    from django.conf import settings

    from moderation.providers.base import ReviewInput
    from moderation.providers.local import LocalProvider, models, sample_video_frames

    loaded = models()  # the first call in this process loads the models
    report("ai_local_model_load_ms", round(loaded.load_ms, 1), "ms")

    provider = LocalProvider()
    with tempfile.TemporaryDirectory(prefix="bench-ai-") as tmp:
        tmp_path = Path(tmp)
        sizes = [(1280, 960), (960, 1280), (1280, 720), (1280, 1280)]
        images = [
            _photo(tmp_path / f"photo_{i}.jpg", sizes[i % len(sizes)], seed=i)
            for i in range(IMAGE_BATCH * (IMAGE_BATCHES + 1))
        ]
        batches = [images[i : i + IMAGE_BATCH] for i in range(0, len(images), IMAGE_BATCH)]
        provider.review(ReviewInput(image_paths=batches[0]))  # warm-up: ONNX allocates on the first run
        rates = []
        for batch in batches[1:]:
            started = time.perf_counter()
            provider.review(ReviewInput(image_paths=batch))
            rates.append(len(batch) / (time.perf_counter() - started))
        report("ai_local_images_per_s", round(statistics.median(rates), 2), "images/s")

        clip = _clip(tmp_path / "clip_30s_1080p.mp4")
        count = int(settings.AI_VIDEO_FRAMES)
        for name, method in (
            ("ai_local_video_frames_ms", None),
            ("ai_local_video_frames_fps_ms", "fps"),
            ("ai_local_video_frames_seek_ms", "seek"),
        ):
            timings = []
            for run_index in range(VIDEO_RUNS):
                workdir = tmp_path / f"{method}_{run_index}"
                workdir.mkdir()
                started = time.perf_counter()
                frames = sample_video_frames(clip, count=count, workdir=workdir, method=method)
                timings.append((time.perf_counter() - started) * 1000)
                assert len(frames) == count
            report(name, round(statistics.median(timings), 1), "ms")

        started = time.perf_counter()
        provider.review(ReviewInput(video_paths=[clip]))
        report("ai_local_video_review_ms", round((time.perf_counter() - started) * 1000, 1), "ms")


def main() -> None:
    rows: list[tuple[str, float, str]] = []

    def report(name: str, value: float, unit: str) -> None:
        rows.append((name, value, unit))
        print(f"  {name}: {value} {unit}", flush=True)

    run(report)
    width = max(len(name) for name, _, _ in rows)
    print()
    print(f"{'metric':<{width}}  {'value':>10}  unit")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 8}")
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:>10}  {unit}")


if __name__ == "__main__":
    main()
