"""The image processor: verify, decode once, orient, strip metadata, make the variants and a blurhash.

Speed comes from decoding once at the smallest scale that still serves the largest variant (JPEG DCT
scaling via ``draft()``), then deriving every smaller variant from the next larger one. The variants
themselves are the imagekit specs in ``image_specs``; this module only drives them.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python
import numpy as np
import pillow_heif
from django.conf import settings
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError, features
from pilkit.processors import ProcessorPipeline
from pilkit.utils import prepare_image

from media.processors import ffmpeg
from media.processors.base import (
    DecodeBudgetExceeded,
    MediaTooLarge,
    ProcessingError,
    Processor,
    ProcessorResult,
    StepLog,
    StepRecord,
    UnsupportedMedia,
    VariantFile,
)
from media.processors.image_specs import (
    IMAGE_VARIANTS,
    JPEG_FALLBACKS,
    MP4,
    RESAMPLE,
    FitLongestSide,
    VariantSpec,
)

pillow_heif.register_heif_opener()

# Pillow format name -> the MIME type we record. MPO is how Pillow names a phone JPEG that carries
# extra pictures (depth maps, previews); it is a JPEG for every purpose here.
MIME_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "HEIF": "image/heic",
    "AVIF": "image/avif",
}
# The only decoders Pillow may try. Never SVG, PSD, TIFF, EPS, ... (an allow-list, not a deny-list).
DECODERS = ["JPEG", "PNG", "WEBP", "GIF", "HEIF"] + (["AVIF"] if features.check("avif") else [])
ANIMATED_FORMATS = {"GIF", "WEBP", "PNG", "AVIF"}  # MPO and HEIF "frames" are extra stills, not animation
ACCEPTED_LABEL = "JPEG, PNG, WebP, GIF, HEIC or AVIF"

MP4_MAX_SIDE = 1280
MP4_PIPE_FPS = 25
PLACEHOLDER_SIDE = 64
SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
SRGB_ICC = SRGB_PROFILE.tobytes()
LOAD_ERRORS = (OSError, SyntaxError, ValueError, EOFError, RuntimeError, IndexError, KeyError)
TRANSPOSE = {  # EXIF orientation -> the transpose that undoes it (as ImageOps.exif_transpose does)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageProcessor(Processor):
    """Turns one uploaded image into web-ready variants (see ``image_specs``) and facts about it.

    ``specs``/``fallbacks`` default to the production variant set (``image_specs``) and
    ``jpeg_fallback`` to ``settings.IMAGE_JPEG_FALLBACK``; they are parameters so the benchmark
    drives this same code with its own sizes.
    """

    key = "image"
    kind = "image"

    def __init__(
        self,
        *,
        specs: Sequence[type[VariantSpec]] | None = None,
        fallbacks: Sequence[type[VariantSpec]] | None = None,
        jpeg_fallback: bool | None = None,
    ):
        self.specs = tuple(specs if specs is not None else IMAGE_VARIANTS)
        self.fallbacks = tuple(fallbacks if fallbacks is not None else JPEG_FALLBACKS)
        self.jpeg_fallback = jpeg_fallback

    def process(self, *, source: Path, workdir: Path, steps: StepLog) -> ProcessorResult:
        max_pixels = settings.IMAGE_MAX_PIXELS
        with steps.step("open", file=source, max_pixels=max_pixels) as step:
            img = open_image(source, max_pixels=max_pixels)
            step.output = {"format": img.format, "width": img.width, "height": img.height, "mode": img.mode}
        try:
            return self._process(img, workdir=workdir, steps=steps, source=source)
        finally:
            img.close()

    def _process(self, img: Image.Image, *, workdir: Path, steps: StepLog, source: Path) -> ProcessorResult:
        fmt = img.format or ""
        stored_w, stored_h = img.size

        with steps.step("inspect") as step:
            # Frame count and canvas from the file's headers, then the budget, before any frame is
            # decoded (issue 9 row 5); only AVIF needs its frames read for their durations.
            animation = animation_info(source, img)
            step.output = {
                "frames": animation.frames,
                "canvas": f"{animation.width}x{animation.height}",
                "duration_ms": animation.duration_ms,
            }
            check_decode_budget(animation)
            if animation.frames > 1 and animation.duration_ms is None:
                animation.duration_ms = _frame_durations(img, steps)
                step.output["duration_ms"] = animation.duration_ms
            frames, duration_ms = animation.frames, animation.duration_ms
            animated = frames > 1

        # Which variants and how much of the original they need do not depend on the orientation.
        plan = self._plan(stored_w, stored_h)
        scale = max(spec.required_scale(stored_w, stored_h) for spec in plan)
        with steps.step("decode", scale=round(scale, 4)) as step:
            decoded = _decode(img, scale)
            # Read after load(): some formats (PNG) keep their EXIF after the pixel data.
            orientation = _orientation(decoded)
            # HEIF decoders apply the rotation themselves and say so in ``original_orientation``.
            oriented = orientation != 1 or decoded.info.get("original_orientation") not in (None, 1)
            icc = decoded.info.get("icc_profile")
            step.output = {
                "decoded": f"{decoded.width}x{decoded.height}",
                "mode": decoded.mode,
                "orientation": orientation,
            }
        width, height = (stored_h, stored_w) if orientation in (5, 6, 7, 8) else (stored_w, stored_h)

        with steps.step("normalize") as step:
            longest = max(1, round(max(stored_w, stored_h) * scale))
            base, icc_converted, has_alpha = _normalize(
                decoded, longest=longest, icc=icc, keep_source=animated
            )
            step.output = {
                "base": f"{base.width}x{base.height}",
                "orientation_applied": oriented,
                "icc_converted": icc_converted,
                "has_alpha": has_alpha,
            }

        variants, display = self._make_variants(
            base, plan, width=width, height=height, icc_converted=icc_converted, workdir=workdir, steps=steps
        )

        with steps.step("placeholder") as step:
            hash_, dominant = _placeholder(display)
            step.output = {"blurhash": hash_, "dominant_color": dominant}

        metadata: dict[str, Any] = {
            "format": fmt,
            "has_alpha": has_alpha,
            "dominant_color": dominant,
            "animated": animated,
            "frame_count": frames,
            "orientation_applied": oriented,
            "icc_converted": icc_converted,
        }
        duration = round(duration_ms / 1000, 3) if animated and duration_ms else None
        if animated:
            metadata["duration_seconds"] = duration
            with steps.step(MP4, source_format=fmt, frames=frames) as step:
                mp4 = _animation_to_mp4(
                    img,
                    source,
                    workdir / f"{MP4}.mp4",
                    fmt=fmt,
                    orientation=orientation,
                    duration_s=duration,
                    steps=steps,
                    record=step,
                )
                variants.append(mp4)
                step.output = {"width": mp4.width, "height": mp4.height, "bytes": mp4.size_bytes}

        return ProcessorResult(
            width=width,
            height=height,
            duration_seconds=duration,
            blurhash=hash_,
            mime_type=MIME_TYPES[fmt],
            metadata=metadata,
            variants=variants,
        )

    def _plan(self, width: int, height: int) -> list[type[VariantSpec]]:
        """Which specs to make: display sizes the original reaches (at least the smallest), every crop."""
        longest = max(width, height)
        display = [s for s in self.specs if not s.crop]
        fitting = [s for s in display if s.size <= longest]
        if not fitting and display:
            fitting = [min(display, key=lambda s: s.size)]
        return [s for s in self.specs if s.crop or s in fitting]

    def _make_variants(
        self,
        base: Image.Image,
        plan: list[type[VariantSpec]],
        *,
        width: int,
        height: int,
        icc_converted: bool,
        workdir: Path,
        steps: StepLog,
    ) -> tuple[list[VariantFile], Image.Image]:
        fallback_on = self.jpeg_fallback
        if fallback_on is None:
            fallback_on = settings.IMAGE_JPEG_FALLBACK
        icc_profile = SRGB_ICC if icc_converted else None

        for spec in self.specs:
            if spec not in plan:
                steps.skip(
                    f"variant:{spec.name}", f"the original ({width}x{height}) is smaller than {spec.size}px"
                )

        # Largest first, so each variant is made from the smallest image that still covers it.
        ordered = sorted(plan, key=lambda s: (s.crop, -s.size))
        candidates = [base]  # uncropped images, all with the original's aspect ratio
        outputs: list[VariantFile] = []
        for spec in ordered:
            need = spec.required_scale(width, height)
            source = min(
                (c for c in candidates if c.width / width >= need - 1e-3 or c is base),
                key=lambda c: c.width * c.height,
            )
            with steps.step(f"variant:{spec.name}", source=f"{source.width}x{source.height}") as step:
                out = ProcessorPipeline(spec.processors).process(source)
                encodings = [spec]
                if fallback_on:
                    encodings += [f for f in self.fallbacks if f.fallback_for == spec.name]
                for enc in encodings:
                    outputs.append(_save(out, enc, workdir, icc_profile))
                step.output = {
                    "width": out.width,
                    "height": out.height,
                    "bytes": {v.name: v.size_bytes for v in outputs[-len(encodings) :]},
                }
            if not spec.crop and out is not base:
                candidates.append(out)
        display = min(candidates, key=lambda c: c.width * c.height)
        return outputs, display


def open_image(path: Path, *, max_pixels: int) -> Image.Image:
    """Identify the file with the allowed decoders only and refuse oversized images before decoding."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path, formats=DECODERS)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise MediaTooLarge(
                f"The image has far too many pixels; the limit is {max_pixels / 1e6:g} megapixels. "
                "Resize it and upload it again."
            )
        except UnidentifiedImageError:
            raise UnsupportedMedia(_unsupported_message(path))
        except LOAD_ERRORS as exc:
            raise ProcessingError(_damaged_message(exc))
    if img.format not in MIME_TYPES:  # a factory may hand back a subclass format we did not ask for
        img.close()
        raise UnsupportedMedia(_unsupported_message(path))
    pixels = img.width * img.height
    if pixels > max_pixels:
        img.close()
        raise MediaTooLarge(
            f"The image is {img.width}x{img.height} ({pixels / 1e6:.0f} megapixels); the limit is "
            f"{max_pixels / 1e6:g} megapixels. Resize it and upload it again."
        )
    return img


def _unsupported_message(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(1024).lstrip().lower()
    if head.startswith(b"<?xml") or b"<svg" in head:
        return "SVG images are not accepted. Export the picture as PNG or JPEG and upload that instead."
    return f"This file is not an image we can read. Upload a {ACCEPTED_LABEL} image."


def _damaged_message(exc: BaseException) -> str:
    return f"The image file is damaged or incomplete ({exc}). Export it again and re-upload it."


def _orientation(img: Image.Image) -> int:
    try:
        value = int(img.getexif().get(0x0112, 1))
    except LOAD_ERRORS:
        return 1
    return value if 1 <= value <= 8 else 1


@dataclass
class AnimationInfo:
    """What an image's headers say about its animation: no pixel has been decoded to learn it.

    ``width``/``height`` is the canvas every frame is composed on (for GIF, grown to cover frames
    that stick out of the logical screen, as Pillow does). ``duration_ms`` is None when the format
    only tells it by decoding (AVIF sequences).
    """

    frames: int
    width: int
    height: int
    duration_ms: int | None = None

    @property
    def decoded_pixels(self) -> int:
        return self.frames * self.width * self.height


def animation_info(path: Path, img: Image.Image) -> AnimationInfo:
    """Frames, canvas and duration of an opened image, read cheaply from its container.

    Pillow's ``n_frames`` on a GIF decodes every frame (151 s for the 23 KB bomb of issue 9 row 5), so
    GIF blocks, PNG ``acTL``/``fcTL`` chunks and WebP ``ANMF`` chunks are walked here instead; libavif
    reports an AVIF sequence's frame count from its sample table. Stills give one frame.
    """
    fmt = img.format or ""
    # Pillow parses PNG's acTL and WebP's animation header at open: a still is known without reading on.
    still = fmt in ("PNG", "WEBP") and not getattr(img, "is_animated", False)
    if fmt not in ANIMATED_FORMATS or still:
        return AnimationInfo(1, img.width, img.height)
    if fmt == "AVIF":
        frames = int(getattr(img, "n_frames", 1) or 1)
        return AnimationInfo(frames, img.width, img.height)
    data = path.read_bytes()
    try:
        if fmt == "GIF":
            info = _gif_info(data)
        elif fmt == "PNG":
            info = _apng_info(data)
        else:
            info = _webp_info(data)
    except (struct.error, IndexError, ValueError) as exc:
        raise ProcessingError(_damaged_message(exc)) from exc
    info.width, info.height = max(info.width, img.width), max(info.height, img.height)
    return info


def check_decode_budget(info: AnimationInfo) -> None:
    """Refuse, before decoding, an image whose frames or total decoded pixels exceed the limits.

    Three limits (config/settings.py): ``IMAGE_MAX_PIXELS`` per frame (canvas), ``IMAGE_MAX_FRAMES``,
    and ``MEDIA_MAX_IMAGE_DECODED_PIXELS`` for canvas pixels × frames and for the MP4 made of an
    animation (its pixels × frames at 25 fps over the animation's duration). Raises
    ``MediaTooLarge``/``DecodeBudgetExceeded`` (never retried) with a sentence the creator can act on.
    """
    max_pixels = settings.IMAGE_MAX_PIXELS
    canvas = info.width * info.height
    if canvas > max_pixels:
        raise MediaTooLarge(
            f"The image is {info.width}x{info.height} ({canvas / 1e6:.0f} megapixels); the limit is "
            f"{max_pixels / 1e6:g} megapixels. Resize it and upload it again."
        )
    if info.frames <= 1:
        return
    max_frames = settings.IMAGE_MAX_FRAMES
    if info.frames > max_frames:
        raise MediaTooLarge(
            f"The animation has {info.frames} frames; the limit is {max_frames}. "
            "Shorten it and upload it again."
        )
    budget = settings.MEDIA_MAX_IMAGE_DECODED_PIXELS
    if info.decoded_pixels > budget:
        raise DecodeBudgetExceeded(
            f"The animation is {info.width}x{info.height} with {info.frames} frames: "
            f"{info.decoded_pixels / 1e6:,.0f} megapixels to decode; the limit is {budget / 1e6:,.0f}. "
            "Make it smaller or give it fewer frames and upload it again."
        )
    if info.duration_ms:
        mp4_w, mp4_h = _mp4_size(info.width, info.height)
        mp4_frames = math.ceil(info.duration_ms / 1000 * MP4_PIPE_FPS)
        if mp4_w * mp4_h * mp4_frames > budget:
            raise DecodeBudgetExceeded(
                f"The animation plays for {ffmpeg.human_duration(info.duration_ms / 1000)}; at "
                f"{info.width}x{info.height} that is more video than we make from an animation. "
                "Shorten it or make it smaller and upload it again."
            )


def _gif_info(data: bytes) -> AnimationInfo:
    """Walk a GIF's blocks (GIF89a spec): count image descriptors, add up the graphic-control delays."""
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        raise ValueError("not a GIF")
    width, height, packed = struct.unpack_from("<HHB", data, 6)
    pos = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    frames = duration = delay = 0
    right, bottom = width, height
    size = len(data)
    while pos < size:
        block = data[pos]
        pos += 1
        if block == 0x21:  # extension: label, then sub-blocks
            label = data[pos]
            pos += 1
            if label == 0xF9 and data[pos] >= 4:
                delay = data[pos + 2] | data[pos + 3] << 8
            pos = _skip_sub_blocks(data, pos)
        elif block == 0x2C:  # image descriptor: geometry, local colour table, LZW data
            left, top, w, h, flags = struct.unpack_from("<HHHHB", data, pos)
            pos += 9 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
            pos = _skip_sub_blocks(data, pos)
            frames += 1
            duration += delay * 10
            delay = 0
            right, bottom = max(right, left + w), max(bottom, top + h)
        else:  # the trailer (0x3B) or trailing garbage: decoders stop here too
            break
    return AnimationInfo(max(1, frames), right, bottom, duration or None)


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    size = len(data)
    while pos < size:
        length = data[pos]
        pos += 1 + length
        if length == 0:
            break
    return pos


def _apng_info(data: bytes) -> AnimationInfo:
    """Walk PNG chunks: ``acTL`` gives the frame count, each ``fcTL`` one frame's delay (APNG spec)."""
    width, height = struct.unpack_from(">II", data, 16)
    frames, fctl, duration = None, 0, 0.0
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = pos + 8
        if kind == b"acTL" and length >= 8:
            frames = struct.unpack_from(">I", data, body)[0]
        elif kind == b"fcTL" and length >= 26:
            fctl += 1
            num, den = struct.unpack_from(">HH", data, body + 20)
            duration += num * 1000 / (den or 100)
        elif kind == b"IEND":
            break
        pos = body + length + 4
    if frames is None:
        return AnimationInfo(1, width, height)
    return AnimationInfo(max(1, frames, fctl), width, height, round(duration) or None)


def _webp_info(data: bytes) -> AnimationInfo:
    """Walk a WebP's RIFF chunks: the ``VP8X`` canvas and one ``ANMF`` chunk per frame."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP")
    width = height = 0
    frames = duration = 0
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if kind == b"VP8X" and length >= 10:
            width = 1 + int.from_bytes(data[body + 4 : body + 7], "little")
            height = 1 + int.from_bytes(data[body + 7 : body + 10], "little")
        elif kind == b"ANMF" and length >= 16:
            frames += 1
            duration += int.from_bytes(data[body + 12 : body + 15], "little")
        pos = body + length + (length & 1)
    return AnimationInfo(max(1, frames), width, height, (duration or None) if frames > 1 else None)


def _frame_durations(img: Image.Image, steps: StepLog) -> int | None:
    """Add up the frame durations by reading every frame (AVIF only; run after the budget check)."""
    total = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            for index in range(getattr(img, "n_frames", 1)):
                img.seek(index)
                img.load()
                total += int(img.info.get("duration") or 0)
                steps.beat()
        img.seek(0)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise MediaTooLarge("An animation frame is larger than allowed. Resize it and upload it again.")
    except LOAD_ERRORS as exc:
        raise ProcessingError(_damaged_message(exc))
    return total or None


def _decode(img: Image.Image, scale: float) -> Image.Image:
    """Decode the (first) frame, letting JPEG's DCT scaling skip pixels the variants never need."""
    if scale < 1.0 and img.format in ("JPEG", "MPO"):
        img.draft(img.mode, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise MediaTooLarge("The image has far too many pixels. Resize it and upload it again.")
    except LOAD_ERRORS as exc:
        raise ProcessingError(_damaged_message(exc))
    return img


def _normalize(
    decoded: Image.Image, *, longest: int, icc: bytes | None, keep_source: bool
) -> tuple[Image.Image, bool, bool]:
    """Shrink to the working size, orient, drop every metadata block and convert colours to sRGB.

    Orientation and colour work happen after shrinking, on the fewest pixels. Unless ``keep_source``
    (an animation's frames are read again later), the decoded pixels are released as soon as they
    have been shrunk, which keeps the memory peak to about one decoded image.
    """
    img = decoded
    if img.mode in HIGH_DEPTH_MODES:
        img = to_8bit(img)
    elif img.mode not in ("L", "LA", "RGB", "RGBA", "CMYK"):
        img = img.convert("RGBA" if img.has_transparency_data else "RGB")
    img = FitLongestSide(longest).process(img)
    if img is decoded and keep_source:
        img = img.copy()
    elif img is not decoded and not keep_source:
        decoded.close()
    ImageOps.exif_transpose(img, in_place=True)
    img.info = {}

    img, icc_converted = _to_srgb(img, icc)
    if img.mode == "L":
        img = img.convert("RGB")
    elif img.mode == "LA":
        img = img.convert("RGBA")
    has_alpha = img.mode == "RGBA" and img.getchannel("A").getextrema()[0] < 255
    if img.mode == "RGBA" and not has_alpha:
        img = img.convert("RGB")
    img.info = {}
    return img, icc_converted, has_alpha


# Greyscale modes deeper than 8 bits (Pillow's names): 16-bit PNGs open as ``I;16`` (``I;16B`` when
# built from big-endian data); ``I`` is 32-bit signed and ``F`` 32-bit float. 16-bit colour PNGs
# Pillow already reduces to 8-bit ``RGB``/``RGBA`` when it opens them (Pillow 13).
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_8bit(img: Image.Image) -> Image.Image:
    """A high-bit-depth greyscale image as 8-bit ``L``, scaled, never clipped (issue 11 row 1).

    ``I;16*`` and ``I`` hold 0…65535 (the 16-bit samples of a PNG; ``I`` has no other source among
    the decoders we allow), mapped linearly to 0…255 (v / 257: 65535 → 255, 32896 → 128); values
    outside the range are clamped. ``F`` is scaled from 0…1 when its values fit there (the usual
    float convention), else from 0…65535 like the integer modes. Pillow's own ``convert("L")``
    clips instead of scaling: a 0…65535 ramp turns white from 256 on.
    """
    if img.mode == "F":
        low, high = img.getextrema()
        scale = 255.0 if high <= 1.0 else 1 / 257
        return img.point(lambda v: v * scale + 0.5).convert("L")
    if img.mode != "I":
        img = img.convert("I")
    return img.point(lambda v: v * (1 / 257) + 0.5).convert("L")


def _to_srgb(img: Image.Image, icc: bytes | None) -> tuple[Image.Image, bool]:
    profile = None
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        except (OSError, ImageCms.PyCMSError):
            profile = None  # an unreadable profile is dropped, like the rest of the metadata
    if img.mode == "CMYK":
        if profile is not None and profile.profile.xcolor_space.strip() == "CMYK":
            try:
                return ImageCms.profileToProfile(img, profile, SRGB_PROFILE, outputMode="RGB"), True
            except ImageCms.PyCMSError:
                pass
        return img.convert("RGB"), True
    if profile is None or img.mode not in ("RGB", "RGBA"):
        return img, False
    if profile.profile.xcolor_space.strip() != "RGB" or _is_srgb(profile):
        return img, False
    try:
        converted = ImageCms.profileToProfile(img, profile, SRGB_PROFILE, outputMode=img.mode)
    except ImageCms.PyCMSError:
        return img, False
    return converted, True


def _is_srgb(profile: ImageCms.ImageCmsProfile) -> bool:
    description = (profile.profile.profile_description or "").lower()
    return "srgb" in description


def _save(img: Image.Image, spec: type[VariantSpec], workdir: Path, icc_profile: bytes | None) -> VariantFile:
    """Encode with the spec's format and options, with no metadata but (when needed) the sRGB profile."""
    out, kwargs = prepare_image(img, spec.format)
    kwargs.update(spec.options or {})
    # Pillow copies some blocks from ``info`` by default; ask explicitly for none.
    kwargs.update(exif=b"", xmp=b"", comment=b"")
    if icc_profile:
        kwargs["icc_profile"] = icc_profile
    out.info = {}
    path = workdir / f"{spec.name}.{spec.extension}"
    out.save(path, spec.format, **kwargs)
    return VariantFile(
        name=spec.name, path=path, mime_type=spec.mime_type, width=out.width, height=out.height
    )


def _placeholder(display: Image.Image) -> tuple[str, str]:
    """Blurhash and dominant colour from a tiny copy of the smallest display variant."""
    small = display.copy()
    small.thumbnail((PLACEHOLDER_SIDE, PLACEHOLDER_SIDE), Image.Resampling.BOX)
    small = _flatten(small)
    quantized = small.quantize(colors=8, method=Image.Quantize.MEDIANCUT)
    _, index = max(quantized.getcolors())
    palette = quantized.getpalette() or []
    r, g, b = palette[index * 3 : index * 3 + 3]
    x, y = (4, 3) if small.width >= small.height else (3, 4)
    return blurhash_encode(np.asarray(small), x, y), f"#{r:02x}{g:02x}{b:02x}"


_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


def blurhash_encode(rgb: np.ndarray, x_components: int, y_components: int) -> str:
    """The BlurHash of an sRGB ``(height, width, 3)`` uint8 array, with ``x_components`` ×
    ``y_components`` (1–9 each) cosine components, as the reference encoder computes it
    (github.com/woltapp/blurhash, Algorithm.md): a DCT of the linear-light pixels, quantised to base 83.
    """
    if not (1 <= x_components <= 9 and 1 <= y_components <= 9):
        raise ValueError("BlurHash components must be between 1 and 9")
    height, width = rgb.shape[:2]
    linear = _srgb_to_linear(rgb[..., :3].astype(np.float64) / 255)
    cos_y = np.cos(np.pi * np.outer(np.arange(y_components), np.arange(height)) / height)
    cos_x = np.cos(np.pi * np.outer(np.arange(x_components), np.arange(width)) / width)
    # factors[j, i, c] = sum over pixels of cos_y[j, y] * cos_x[i, x] * linear[y, x, c]
    factors = np.einsum("jy,ix,yxc->jic", cos_y, cos_x, linear) / (width * height)
    factors[1:] *= 2
    factors[0, 1:] *= 2
    flat = factors.reshape(-1, 3)
    dc, ac = flat[0], flat[1:]

    out = _base83((x_components - 1) + (y_components - 1) * 9, 1)
    if len(ac):
        quantised = int(max(0, min(82, math.floor(float(np.abs(ac).max()) * 166 - 0.5))))
        maximum = (quantised + 1) / 166
    else:
        quantised, maximum = 0, 1.0
    out += _base83(quantised, 1)
    r, g, b = (_linear_to_srgb(float(v)) for v in dc)
    out += _base83((r << 16) + (g << 8) + b, 4)
    for colour in ac:
        q = [
            int(max(0, min(18, math.floor(math.copysign(abs(v / maximum) ** 0.5, v) * 9 + 9.5))))
            for v in colour
        ]
        out += _base83(q[0] * 19 * 19 + q[1] * 19 + q[2], 2)
    return out


def blurhash_average_colour(hash_: str) -> tuple[int, int, int]:
    """The average sRGB colour a BlurHash encodes (its DC component, characters 2–5)."""
    value = 0
    for char in hash_[2:6]:
        value = value * 83 + _BASE83.index(char)
    return value >> 16, (value >> 8) & 255, value & 255


def _base83(value: int, length: int) -> str:
    return "".join(_BASE83[value // 83 ** (length - 1 - i) % 83] for i in range(length))


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(v: float) -> int:
    v = max(0.0, min(1.0, v))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _flatten(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    if img.mode == "RGB":
        return img
    rgba = img.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, background)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _mp4_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MP4_MAX_SIDE / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _mp4_output(stream: Any, out: Path) -> Any:
    """H.264 yuv420p MP4 with ``+faststart``, no audio, subtitles or data, no metadata."""
    return ffmpeg_python.output(
        stream,
        str(out),
        f="mp4",
        an=None,
        sn=None,
        dn=None,
        **{"c:v": "libx264"},
        preset=settings.VIDEO_PRESET,
        crf=settings.VIDEO_CRF,
        pix_fmt="yuv420p",
        movflags="+faststart",
        map_metadata="-1",
    )


def _animation_to_mp4(
    img: Image.Image,
    source: Path,
    out: Path,
    *,
    fmt: str,
    orientation: int,
    duration_s: float | None,
    steps: StepLog,
    record: StepRecord,
) -> VariantFile:
    """An H.264 MP4 of the animation: plays everywhere and is far smaller than a GIF.

    GIFs go through ffmpeg's gif demuxer (and only that one); other animated formats, which ffmpeg
    cannot decode, are fed to it on stdin as raw frames decoded by Pillow. Both run through
    ``ffmpeg.run_graph`` (deadline, process-group kill, no orphan), reporting progress to ``record``.
    """
    width, height = img.size
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    size = _mp4_size(width, height)
    stdin = None
    if fmt == "GIF":
        picture = ffmpeg.safe_input(source, demuxer="gif")["v:0"]
        picture = picture.filter("scale", size[0], size[1], flags="lanczos").filter("format", "yuv420p")
    else:
        picture = ffmpeg.raw_frames_input(width=size[0], height=size[1], fps=MP4_PIPE_FPS)
        picture = picture.filter("format", "yuv420p")
        stdin = _raw_frames(img, size, orientation=orientation)

    def report(block: dict[str, str]) -> None:
        steps.progress(record, **ffmpeg.progress_values(block, duration_s))

    try:
        ffmpeg.run_graph(
            _mp4_output(picture, out),
            timeout=float(settings.IMAGE_FFMPEG_TIMEOUT_SECONDS),
            outputs=[out],
            stdin=stdin,
            on_progress=report,
            failure_message="The animation could not be converted to video; it may be damaged.",
        )
    except FileNotFoundError:
        raise ProcessingError("The video encoder is not available on the server.", retryable=True)
    finally:
        img.seek(0)
    if not out.exists():
        raise ProcessingError("The animation could not be converted to video; it may be damaged.")
    return VariantFile(name=MP4, path=out, mime_type="video/mp4", width=size[0], height=size[1])


def _raw_frames(img: Image.Image, size: tuple[int, int], *, orientation: int) -> Iterator[bytes]:
    """Pillow-decoded frames as rgb24 at a constant MP4_PIPE_FPS, repeating frames to keep their timing."""
    stored = (size[1], size[0]) if orientation in (5, 6, 7, 8) else size
    frame_ms = 1000 / MP4_PIPE_FPS
    index = 0
    while True:
        try:
            img.seek(index)
        except EOFError:
            return
        frame = _flatten(img.convert("RGBA")).resize(stored, RESAMPLE, reducing_gap=3.0)
        if orientation in TRANSPOSE:
            frame = frame.transpose(TRANSPOSE[orientation])
        repeats = max(1, round(int(img.info.get("duration") or 100) / frame_ms))
        data = frame.tobytes()
        for _ in range(repeats):
            yield data
        index += 1
