"""Benchmark of the PDQ perceptual-hash blocklist: hash time per 12 MP image and per video, match time
against 10k / 100k / 1M stored hashes, and whether edited copies of a blocked picture are caught while
1,000 unrelated pictures are not.

Not collected by pytest. Run alone with ``python tests/benchmarks/run.py --only pdq`` or call
``run(report)`` where ``report(name, value, unit)`` records one figure.
"""

from __future__ import annotations

import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Report = Callable[[str, float, str], None]
QUERIES = 20
UNRELATED = 1000
BLOCKED = 50


def _timed(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _unrelated(seed: int):
    """Structurally different pictures: scenes of shapes, pure noise, gradients with stripes,
    checkerboards of random cell sizes (by seed)."""
    import numpy as np
    from PIL import Image

    from tests.media.helpers import scene_image

    rng = np.random.default_rng(10_000 + seed)
    kind = seed % 4
    w, h = 480, 360
    if kind == 0:
        return scene_image(10_000 + seed, (w, h))
    if kind == 1:
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 2:
        period = rng.uniform(8, 80)
        angle = rng.uniform(0, np.pi)
        wave = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) / period * 2 * np.pi) * 0.5 + 0.5
        ramp = xx / w if rng.random() < 0.5 else yy / h
        grey = (wave * 0.6 + ramp * 0.4) * 255
        tint = rng.uniform(0.3, 1.0, 3)
        return Image.fromarray((grey[..., None] * tint).astype(np.uint8), "RGB")
    cell = int(rng.integers(6, 90))
    board = ((xx // cell + yy // cell) % 2).astype(np.float32)
    colours = rng.integers(0, 256, (2, 3))
    pic = colours[0] * (1 - board[..., None]) + colours[1] * board[..., None]
    return Image.fromarray(pic.astype(np.uint8), "RGB")


def run(report: Report) -> None:
    import numpy as np
    from PIL import Image

    from media.processors import pdq
    from tests.media.helpers import image_bytes, reencoded_copy, scene_image

    work = Path(tempfile.mkdtemp(prefix="bench-pdq-"))
    # 1. hash time per 12 MP image (4000x3000 JPEG, decoded at a reduced scale as the worker does)
    big = work / "12mp.jpg"
    big.write_bytes(image_bytes(scene_image(1, (4000, 3000))))
    report("pdq_hash_12mp_ms", round(_timed(lambda: pdq.hash_file(big), 5) * 1000, 1), "ms")
    medium = work / "medium.jpg"
    medium.write_bytes(image_bytes(scene_image(1, (1280, 960))))
    report(
        "pdq_hash_medium_with_crops_ms",
        round(_timed(lambda: pdq.hash_file(medium, crops=True), 5) * 1000, 1),
        "ms",
    )

    # 2. per video: 30 s 360p H.264 (the smallest rendition the worker samples), 4 frames
    clip = work / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30:duration=30",
        ]
        + ["-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "veryfast", "-g", "250", str(clip)],
        check=True,
    )
    frames = work / "frames"
    frames.mkdir()
    seconds = _timed(
        lambda: pdq.video_frame_hashes(clip, duration=30.0, count=4, workdir=frames, timeout=60), 3
    )
    report("pdq_hash_video_30s_4frames_ms", round(seconds * 1000, 1), "ms")

    # 3. match time against 10k / 100k / 1M stored hashes (random: the scan costs the same whatever they are)
    rng = np.random.default_rng(7)
    queries = [f"{int.from_bytes(rng.bytes(32), 'big'):064x}" for _ in range(QUERIES)]
    for n in (10_000, 100_000, 1_000_000):
        index = pdq.PdqIndex(packed=rng.integers(0, 2**64, (n, pdq.WORDS), dtype=np.uint64, endpoint=False))
        index.nearest(queries[0], 31)  # warm
        per_query = _timed(lambda idx=index: [idx.nearest(q, 31) for q in queries], 3) / len(queries)
        label = {10_000: "10k", 100_000: "100k", 1_000_000: "1m"}[n]
        report(f"pdq_match_{label}_ms", round(per_query * 1000, 2), "ms")
    big_hexes = [f"{int.from_bytes(rng.bytes(32), 'big'):064x}" for _ in range(100_000)]
    report(
        "pdq_index_build_100k_from_hex_ms", round(_timed(lambda: pdq.PdqIndex(big_hexes), 3) * 1000, 1), "ms"
    )

    # 4. edited copies of blocked pictures are caught; 1,000 unrelated pictures are not
    limit = 31
    stored, keys, originals = [], [], []
    for b in range(BLOCKED):
        picture = scene_image(500 + b, (1600, 1200))
        originals.append(picture)
        path = work / f"blocked-{b}.jpg"
        path.write_bytes(image_bytes(picture.resize((1280, 960))))
        for h in pdq.hash_file(path, crops=True):
            stored.append(h.hex)
            keys.append(b)
    index = pdq.PdqIndex(stored, keys)
    edits = {
        "reencoded_q60": lambda p: image_bytes(p, quality=60),
        "resized_50": lambda p: image_bytes(p.resize((p.width // 2, p.height // 2))),
        "cropped_4pct": lambda p: reencoded_copy(p, scale=1.0, crop=0.04, quality=90),
        "all_three": lambda p: reencoded_copy(p, scale=0.5, crop=0.04, quality=60),
    }
    for name, edit in edits.items():
        caught, worst = 0, 0
        for b, picture in enumerate(originals):
            h = pdq.hash_image(Image.open(io.BytesIO(edit(picture)))).hex
            match = index.nearest(h, 256)
            worst = max(worst, match.distance)
            caught += match.key == b and match.distance <= limit
        report(f"pdq_caught_{name}_pct", round(100 * caught / len(originals), 1), "%")
        report(f"pdq_worst_distance_{name}", worst, "bits")
    false_matches, nearest = 0, 256
    for seed in range(UNRELATED):
        h = pdq.hash_image(_unrelated(seed))
        if h.quality < 50:
            continue  # never looked up (PDQ_MIN_QUALITY)
        match = index.nearest(h.hex, 256)
        nearest = min(nearest, match.distance)
        false_matches += match.distance <= limit
    report("pdq_false_matches_of_1000_unrelated", false_matches, "images")
    report("pdq_nearest_unrelated_distance", nearest, "bits")


if __name__ == "__main__":
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    run(lambda name, value, unit: print(f"BENCH {name} {value} {unit}", flush=True))
