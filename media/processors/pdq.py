"""Perceptual hashes (Meta's PDQ, https://github.com/facebook/ThreatExchange/tree/main/pdq) and a
brute-force Hamming matcher over packed hashes. Pure: pictures and arrays in, hashes and indexes out.

A PDQ hash is 256 bits; two pictures of the same scene (re-encoded, resized, lightly cropped or
retouched) land within a small Hamming distance, unrelated pictures around 128 apart. Meta's
published threshold for a match is a distance of at most 31 (``settings.PDQ_MATCH_DISTANCE``), and
hashes with a quality below 50 are too flat (blank frames, solid fills) to be matched reliably: their
bits are mostly noise (``settings.PDQ_MIN_QUALITY``).

Hashing uses the ``pdqhash`` package (Cython bindings over Meta's C++ reference). It is an sdist
whose build requires ``numpy>=2``, so pip builds it against the numpy 2 we ship; a wheel built
against numpy 1 (e.g. in a cache) fails to import with "numpy.core.multiarray failed to import".

Hashes are stored as Meta's canonical 64-digit hex (``Hash256::format``: word 15 first), so they
compare with hashes from ThreatExchange's tools and other PDQ implementations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HASH_BITS = 256
WORDS = HASH_BITS // 64  # a hash packs into 4 uint64
# Meta's reference hasher downsamples to 512 px before the 64x64 step (pdq-photo-hasher); a bigger
# picture adds decode time, not accuracy.
HASH_MAX_SIDE = 512


@dataclass(frozen=True)
class PdqHash:
    """One picture's hash: ``hex`` (64 lowercase hex digits, Meta's canonical form), ``quality``
    (0-100, Meta's gradient-based confidence) and ``source`` (which picture: ``medium``,
    ``poster``, ``frame@12.5``)."""

    hex: str
    quality: int
    source: str = ""

    def as_dict(self) -> dict:
        return {"hash": self.hex, "quality": self.quality, "source": self.source}


def _bits_to_hex(bits: np.ndarray) -> str:
    """pdqhash's bit vector (bit k is bit k % 16 of word k // 16) to Meta's hex (word 15 first)."""
    value = 0
    for k in np.flatnonzero(np.asarray(bits, dtype=np.uint8)):
        value |= 1 << int(k)
    return f"{value:064x}"


def hash_image(img: Image.Image, *, source: str = "") -> PdqHash:
    """PDQ hash of a decoded picture (any mode; alpha is flattened onto white, the picture is shrunk
    to at most ``HASH_MAX_SIDE`` px first, as Meta's reference hasher does). Raises ValueError for
    an empty picture."""
    import pdqhash

    if img.width < 1 or img.height < 1:
        raise ValueError("cannot hash an empty picture")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        img = flat
    elif img.mode != "RGB":
        img = img.convert("RGB")
    if max(img.size) > HASH_MAX_SIDE:
        img = img.copy()
        img.thumbnail((HASH_MAX_SIDE, HASH_MAX_SIDE), Image.Resampling.BILINEAR)
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(img, dtype=np.uint8)))
    return PdqHash(hex=_bits_to_hex(bits), quality=int(quality), source=source)


def hash_file(path: Path | str, *, source: str = "", crops: bool = False) -> list[PdqHash]:
    """PDQ hashes of the first frame of the picture at ``path`` (a variant we wrote: JPEG, WebP,
    PNG): the picture's own hash first, then with ``crops`` those of its ``CROPS``. Raises
    OSError/ValueError when it cannot be decoded."""
    with Image.open(path) as img:
        img.draft("RGB", (HASH_MAX_SIDE * 2, HASH_MAX_SIDE * 2))  # JPEG: decode at a reduced scale
        img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
        hashes = [hash_image(img, source=source)]
        if crops:
            hashes += crop_hashes(img, source=source)
        return hashes


# PDQ follows a picture's grid: cropping 2 % off every edge moves a hash ~30 bits, 5 % ~60-80
# (measured on tests.media.helpers.scene_image). A blocked picture is therefore also stored as these
# crops (fractions off left, top, right, bottom), so a lightly cropped copy lands near one of them.
CROPS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("c1.5", (0.015, 0.015, 0.015, 0.015)),
    ("c3", (0.03, 0.03, 0.03, 0.03)),
    ("c4.5", (0.045, 0.045, 0.045, 0.045)),
    ("c6", (0.06, 0.06, 0.06, 0.06)),
    ("l5", (0.05, 0, 0, 0)),
    ("t5", (0, 0.05, 0, 0)),
    ("r5", (0, 0, 0.05, 0)),
    ("b5", (0, 0, 0, 0.05)),
)
CROP_MARK = "~crop-"  # "medium~crop-c3": a crop's hash, stored for blocking, never a query


def crop_hashes(img: Image.Image, *, source: str = "") -> list[PdqHash]:
    """The hashes of ``img``'s ``CROPS`` (sources ``<source>~crop-<name>``)."""
    w, h = img.size
    out = []
    for name, (left, top, right, bottom) in CROPS:
        box = (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
        if box[2] - box[0] < 8 or box[3] - box[1] < 8:
            continue
        out.append(hash_image(img.crop(box), source=f"{source}{CROP_MARK}{name}"))
    return out


def is_crop(entry_source: str) -> bool:
    """True for a stored crop's hash (see ``CROPS``)."""
    return CROP_MARK in entry_source


def pack(hexes: Iterable[str]) -> np.ndarray:
    """Hex hashes to an ``(n, 4)`` uint64 array (big-endian words of the 256-bit value). Raises
    ValueError for a string that is not 64 hex digits."""
    hexes = list(hexes)
    if not hexes:
        return np.zeros((0, WORDS), dtype=np.uint64)
    for h in hexes:
        if len(h) != HASH_BITS // 4:
            raise ValueError(f"a PDQ hash is 64 hex digits, got {len(h)}")
    raw = bytes.fromhex("".join(hexes))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, WORDS)


def hamming(a: str, b: str) -> int:
    """Hamming distance between two hex hashes (0-256)."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


_TABLE = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_table(words: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Set bits per uint64 through a byte lookup table (numpy < 2 has no popcount ufunc)."""
    counts = _TABLE[words.view(np.uint8)].reshape(*words.shape, 8).sum(axis=-1, dtype=np.uint8)
    if out is None:
        return counts
    out[...] = counts
    return out


# numpy >= 2.0 has a native popcount ufunc (we ship 2.x); the table is the fallback.
_popcount = np.bitwise_count if hasattr(np, "bitwise_count") else _popcount_table


@dataclass(frozen=True)
class Match:
    """The nearest stored hash within the threshold: its ``position`` in the index, the ``key`` it
    was stored with and its Hamming ``distance``."""

    position: int
    key: object
    distance: int


class PdqIndex:
    """An immutable set of hashes, each with a caller's key (e.g. a BlockedMedia id), matched by a
    brute-force scan: XOR against every stored hash and popcount. The four 64-bit words are kept in
    four contiguous columns and scanned in cache-sized chunks with preallocated buffers, so one query
    over 1,000,000 hashes (32 MB) is four XOR + popcount passes, ~20 ms on one core (``make bench``)."""

    CHUNK = 65_536

    def __init__(
        self, hexes: Sequence[str] = (), keys: Sequence[object] = (), *, packed: np.ndarray | None = None
    ):
        packed = pack(hexes) if packed is None else np.asarray(packed, dtype=np.uint64).reshape(-1, WORDS)
        self.columns = [np.ascontiguousarray(packed[:, i]) for i in range(WORDS)]
        self.size = len(packed)
        self.keys = list(keys) if keys else list(range(self.size))
        if len(self.keys) != self.size:
            raise ValueError("one key per hash")

    @property
    def packed(self) -> np.ndarray:
        """The hashes as an ``(n, 4)`` uint64 array (a copy)."""
        return np.stack(self.columns, axis=1) if self.size else np.zeros((0, WORDS), dtype=np.uint64)

    def __len__(self) -> int:
        return self.size

    def distances(self, query: str) -> np.ndarray:
        """Distance from ``query`` to every stored hash, as a uint16 array in index order."""
        q = pack([query])[0]
        out = np.empty(self.size, dtype=np.uint16)
        chunk = min(self.CHUNK, max(1, self.size))
        xor = np.empty(chunk, dtype=np.uint64)
        bits = np.empty(chunk, dtype=np.uint8)
        for start in range(0, self.size, chunk):
            stop = min(self.size, start + chunk)
            m = stop - start
            acc = out[start:stop]
            acc[:] = 0
            for word in range(WORDS):
                np.bitwise_xor(self.columns[word][start:stop], q[word], out=xor[:m])
                acc += _popcount(xor[:m], out=bits[:m])
        return out

    def nearest(self, query: str, max_distance: int) -> Match | None:
        """The closest stored hash at distance ``<= max_distance``, or None."""
        if not self.size:
            return None
        d = self.distances(query)
        i = int(np.argmin(d))
        if int(d[i]) > max_distance:
            return None
        return Match(position=i, key=self.keys[i], distance=int(d[i]))

    def first_match(self, queries: Iterable[str], max_distance: int) -> tuple[str, Match] | None:
        """The first query with a stored hash within ``max_distance`` (and that match), or None."""
        for query in queries:
            match = self.nearest(query, max_distance)
            if match is not None:
                return query, match
        return None


def video_frame_hashes(
    path: Path, *, duration: float | None, count: int, workdir: Path, timeout: float
) -> list[PdqHash]:
    """Hash ``count`` frames spread evenly over a video (the midpoints of ``count`` equal slices;
    from the start when ``duration`` is unknown). Meant for our own smallest rendition: one short
    ffmpeg run per frame with an input seek, each decoding one GOP at 360p. Frames that fail to
    decode are skipped; ``timeout`` (seconds) bounds the whole sampling (ProcessingTimeout)."""
    import time

    from media.processors import ffmpeg

    if count < 1:
        return []
    deadline = time.monotonic() + timeout
    probe = ffmpeg.ffprobe(path, demuxers=ffmpeg.VIDEO_DEMUXERS, kind="video")
    demuxer = ffmpeg.demuxer_of(probe, ffmpeg.VIDEO_DEMUXERS)
    times = (
        [duration * (i + 0.5) / count for i in range(count)] if duration else [float(i) for i in range(count)]
    )
    scale = f"scale='min({HASH_MAX_SIDE},iw)':'min({HASH_MAX_SIDE},ih)':force_original_aspect_ratio=decrease"
    hashes = []
    for i, t in enumerate(times):
        out = workdir / f"pdq_frame_{i:02d}.png"
        try:
            ffmpeg.run_ffmpeg(
                source=path,
                demuxer=demuxer,
                input_options=["-ss", f"{t:.3f}"],
                args=["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", scale, "-frames:v", "1", str(out)],
                outputs=[out],
                timeout=max(0.1, deadline - time.monotonic()),
                failure_message=f"ffmpeg could not take a frame at {t:.1f} s",
            )
        except ffmpeg.FFmpegFailed:
            continue
        if out.is_file() and out.stat().st_size:
            hashes += hash_file(out, source=f"frame@{t:.1f}")
    return hashes
