"""The image variants, declared once as django-imagekit specs.

The worker drives these specs itself (see ``media.processors.image``): it runs each spec's
``processors`` on an in-memory image and saves with the spec's ``format`` and ``options``. imagekit's
own generation path re-decodes the source for every spec, which is slower than decoding once and
deriving each variant from the next larger one. The specs are also registered with imagekit's
registry under ``postflow:image:<name>`` so they can be looked up like any other generator.
"""

from __future__ import annotations

from typing import ClassVar

from imagekit import ImageSpec, register
from PIL import Image

# Pillow's own thumbnail() filter. Measured on a 24 MP photo shrunk to 2048px: 35-40% cheaper than
# LANCZOS, and the two results differ by 52 dB PSNR, far below what WebP/JPEG at quality 82 change.
RESAMPLE = Image.Resampling.BICUBIC
WEBP_OPTIONS = {"quality": 82, "method": 4}
JPEG_OPTIONS = {"quality": 82, "optimize": True, "progressive": True}


# Every name Media.variants may hold, declared once; processors, review and admin derive from these.
LARGE, MEDIUM, SMALL, THUMB = "large", "medium", "small", "thumb"  # image display sizes (specs below)
JPEG_SUFFIX = "_jpeg"  # IMAGE_JPEG_FALLBACK encodings: "large_jpeg" …
MP4 = "mp4"  # an animated image as H.264
R360P, R720P, R1080P = "360p", "720p", "1080p"  # video ladder rungs (media.processors.video.LADDER)
VIDEO_RENDITIONS = (R360P, R720P, R1080P)
POSTER, POSTER_THUMB = "poster", "poster_thumb"  # a video's still and its square thumbnail
HLS = "hls"  # a video's HLS master playlist; its playlists and segments live in the same folder
VIDEO_FALLBACK = R720P  # the one progressive MP4 (a source smaller than 720p: "360p" at its own size)
M4A = "m4a"  # audio, loudness-normalised AAC

# Which variant each consumer takes first (the first one a Media has wins).
IMAGE_REVIEW_PREFERENCE = (MEDIUM, SMALL, LARGE, THUMB)  # what the AI scores: detail at a modest size
VIDEO_REVIEW_PREFERENCE = (R360P, R720P, R1080P)  # MP4s only (HLS is many files): usually the 720p fallback
IMAGE_DISPLAY_PREFERENCE = (MEDIUM, LARGE, SMALL, THUMB)  # a moderator's full view
VIDEO_DISPLAY_PREFERENCE = (R720P, R360P, R1080P)
IMAGE_PREVIEW_PREFERENCE = (THUMB, SMALL)  # list thumbnails
VIDEO_PREVIEW_PREFERENCE = (POSTER_THUMB, POSTER)


BAND_ROWS = 128  # output rows per resize call when shrinking a big image
BAND_MIN_PIXELS = 1_000_000


def shrink(
    img: Image.Image,
    size: tuple[int, int],
    *,
    box: tuple[int, int, int, int] | None = None,
    resample: int = RESAMPLE,
    reducing_gap: float | None = 3.0,
) -> Image.Image:
    """``Image.resize`` with a bounded memory peak.

    Pillow resizes in two passes and keeps a full intermediate image between them (for 24 MP ->
    2048px, 16 MB on top of the source and the result). Resizing bands of output rows, each from its
    ``box`` of the source, gives the same picture with an intermediate of a few rows (pixels can
    differ by rounding: Pillow may order the two passes differently for a band). ``reducing_gap``
    works as in Pillow: an integer ``reduce()`` first when the factor is at least that large.
    """
    box = box or (0, 0, img.width, img.height)
    if box == (0, 0, img.width, img.height) and size == img.size:
        return img
    if reducing_gap:
        factor = int(min((box[2] - box[0]) / size[0], (box[3] - box[1]) / size[1]) / reducing_gap)
        if factor > 1:
            img = img.reduce(factor, box=box)
            box = (0, 0, img.width, img.height)
    # Pillow premultiplies alpha on every resize() call, which would redo it per band.
    if img.mode not in ("L", "RGB", "CMYK") or size[0] * size[1] < BAND_MIN_PIXELS:
        return img.resize(size, resample, box=box)
    out = Image.new(img.mode, size)
    out.info = img.info.copy()
    step = (box[3] - box[1]) / size[1]
    for top in range(0, size[1], BAND_ROWS):
        bottom = min(size[1], top + BAND_ROWS)
        band_box = (box[0], box[1] + top * step, box[2], box[1] + bottom * step)
        out.paste(img.resize((size[0], bottom - top), resample, box=band_box), (0, top))
    return out


class FitLongestSide:
    """A pilkit-style processor: shrink until the longest side is at most ``size``; never enlarge.

    Unlike pilkit's ``ResizeToFit`` it uses ``shrink()``: a bounded memory peak, and ``reducing_gap``
    so big reductions start with a cheap integer ``reduce()`` (Pillow: indistinguishable at 3).
    """

    def __init__(self, size: int, *, resample: int = RESAMPLE, reducing_gap: float = 3.0):
        self.size = size
        self.resample = resample
        self.reducing_gap = reducing_gap

    def process(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        longest = max(width, height)
        if longest <= self.size:
            return img
        scale = self.size / longest
        # Half-up rounding: a variant made from the previous one keeps the original's rounding.
        target = (max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5)))
        return shrink(img, target, resample=self.resample, reducing_gap=self.reducing_gap)


class CenterSquare:
    """A pilkit-style processor: crop the centred square and shrink it to ``size`` (never enlarge).

    pilkit's ``ResizeToFill(upscale=False)`` returns a non-square image when the source is smaller
    than the box; a creator's thumbnail must stay square, so a small source keeps its short side.
    """

    def __init__(self, size: int, *, resample: int = RESAMPLE, reducing_gap: float = 3.0):
        self.size = size
        self.resample = resample
        self.reducing_gap = reducing_gap

    def process(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        side = min(width, height)
        out = min(side, self.size)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
        if out == side:
            return img.crop(box) if width != height else img
        return shrink(img, (out, out), box=box, resample=self.resample, reducing_gap=self.reducing_gap)


class VariantSpec(ImageSpec):
    """One named image variant: the geometry (``size``, ``crop``) and the encoding (format, options).

    ``crop=False``: the longest side is at most ``size``. ``crop=True``: a centred ``size`` square.
    ``fallback_for`` names the variant whose geometry a fallback encoding (e.g. JPEG) reuses.
    """

    name: ClassVar[str] = ""
    size: ClassVar[int] = 0
    crop: ClassVar[bool] = False
    fallback_for: ClassVar[str | None] = None
    mime_type: ClassVar[str] = "image/webp"
    extension: ClassVar[str] = "webp"
    format = "WEBP"
    options = WEBP_OPTIONS
    processors: ClassVar[list] = []

    @classmethod
    def required_scale(cls, width: int, height: int) -> float:
        """The fraction of the original's size this variant needs to be made without enlarging."""
        side = min(width, height) if cls.crop else max(width, height)
        return min(1.0, cls.size / side)


class LargeSpec(VariantSpec):
    name = LARGE
    size = 2048
    processors = [FitLongestSide(2048)]


class MediumSpec(VariantSpec):
    name = MEDIUM
    size = 1280
    processors = [FitLongestSide(1280)]


class SmallSpec(VariantSpec):
    name = SMALL
    size = 640
    processors = [FitLongestSide(640)]


class ThumbSpec(VariantSpec):
    name = THUMB
    size = 320
    crop = True
    processors = [CenterSquare(320)]


class JpegFallbackSpec(VariantSpec):
    """Same geometry as the variant it falls back for, encoded as JPEG for clients without WebP."""

    mime_type = "image/jpeg"
    extension = "jpg"
    format = "JPEG"
    options = JPEG_OPTIONS


class LargeJpegSpec(JpegFallbackSpec):
    name = LARGE + JPEG_SUFFIX
    fallback_for = LARGE
    size = LargeSpec.size
    processors = LargeSpec.processors


class MediumJpegSpec(JpegFallbackSpec):
    name = MEDIUM + JPEG_SUFFIX
    fallback_for = MEDIUM
    size = MediumSpec.size
    processors = MediumSpec.processors


class SmallJpegSpec(JpegFallbackSpec):
    name = SMALL + JPEG_SUFFIX
    fallback_for = SMALL
    size = SmallSpec.size
    processors = SmallSpec.processors


class ThumbJpegSpec(JpegFallbackSpec):
    name = THUMB + JPEG_SUFFIX
    fallback_for = THUMB
    size = ThumbSpec.size
    crop = True
    processors = ThumbSpec.processors


# The default variant set, largest first; fallbacks are made only with settings.IMAGE_JPEG_FALLBACK.
IMAGE_VARIANTS: tuple[type[VariantSpec], ...] = (LargeSpec, MediumSpec, SmallSpec, ThumbSpec)
JPEG_FALLBACKS: tuple[type[VariantSpec], ...] = (LargeJpegSpec, MediumJpegSpec, SmallJpegSpec, ThumbJpegSpec)

for _spec in IMAGE_VARIANTS + JPEG_FALLBACKS:
    register.generator(f"postflow:image:{_spec.name}", _spec)
