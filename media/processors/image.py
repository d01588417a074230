"""The image processor: verify, decode once, orient, strip metadata, make the variants and a blurhash.

Speed comes from decoding once at the smallest scale that still serves the largest variant (JPEG DCT
scaling via ``draft()``), then deriving every smaller variant from the next larger one. The variants
themselves are the imagekit specs in ``image_specs``; this module only drives them.
"""

from __future__ import annotations

import contextlib
import io
import math
import subprocess
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import blurhash
import pillow_heif
from django.conf import settings
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError, features
from pilkit.processors import ProcessorPipeline
from pilkit.utils import prepare_image

from media.processors.base import (
    MediaTooLarge,
    ProcessingError,
    ProcessingTimeout,
    Processor,
    ProcessorResult,
    StepLog,
    UnsupportedMedia,
    VariantFile,
)
from media.processors.image_specs import (
    IMAGE_VARIANTS,
    JPEG_FALLBACKS,
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
        max_pixels = int(getattr(settings, "IMAGE_MAX_PIXELS", 50_000_000))
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
            frames, duration_ms = _scan_frames(img) if fmt in ANIMATED_FORMATS else (1, None)
            animated = frames > 1
            step.output = {"frames": frames, "duration_ms": duration_ms}

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
            with steps.step("mp4", source_format=fmt, frames=frames) as step:
                mp4 = _animation_to_mp4(img, source, workdir / "mp4.mp4", fmt=fmt, orientation=orientation)
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
            fallback_on = bool(getattr(settings, "IMAGE_JPEG_FALLBACK", False))
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


def _scan_frames(img: Image.Image) -> tuple[int, int | None]:
    """Count frames and add up their durations, refusing animations with too many frames."""
    max_frames = int(getattr(settings, "IMAGE_MAX_FRAMES", 1000))
    if not getattr(img, "is_animated", False):
        return 1, None
    frames, duration = 0, 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            while True:
                try:
                    img.seek(frames)
                except EOFError:
                    break
                frames += 1
                duration += int(img.info.get("duration") or 0)
                if frames > max_frames:
                    raise MediaTooLarge(
                        f"The animation has more than {max_frames} frames; shorten it and upload it again."
                    )
        img.seek(0)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise MediaTooLarge(
            "An animation frame is larger than allowed. Resize the animation and upload it again."
        )
    except LOAD_ERRORS as exc:
        raise ProcessingError(_damaged_message(exc))
    return frames, duration or None


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
    if img.mode not in ("L", "LA", "RGB", "RGBA", "CMYK"):
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
    with warnings.catch_warnings():  # blurhash-python still calls Image.getdata(), deprecated in Pillow 13
        warnings.simplefilter("ignore", DeprecationWarning)
        hash_ = blurhash.encode(small, x, y)  # closes the image it is given
    return hash_, f"#{r:02x}{g:02x}{b:02x}"


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


def _ffmpeg_output_args(out: Path) -> list[str]:
    return [
        "-map", "0:v:0", "-an", "-sn", "-dn",
        "-c:v", "libx264",
        "-preset", str(getattr(settings, "VIDEO_PRESET", "veryfast")),
        "-crf", str(getattr(settings, "VIDEO_CRF", 23)),
        "-pix_fmt", "yuv420p",
        "-movflags", "+faststart",
        "-f", "mp4", f"file:{out}",
    ]  # fmt: skip


def _animation_to_mp4(
    img: Image.Image, source: Path, out: Path, *, fmt: str, orientation: int
) -> VariantFile:
    """An H.264 MP4 of the animation: plays everywhere and is far smaller than a GIF.

    GIFs go through ffmpeg's gif demuxer (and only that one); other animated formats, which ffmpeg
    cannot decode, are fed to it as raw frames decoded by Pillow.
    """
    timeout = float(getattr(settings, "IMAGE_FFMPEG_TIMEOUT_SECONDS", 120))
    ffmpeg = str(getattr(settings, "FFMPEG_BINARY", "ffmpeg"))
    width, height = img.size
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    size = _mp4_size(width, height)
    base = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    scale = ["-vf", f"scale={size[0]}:{size[1]}:flags=lanczos,format=yuv420p"]
    try:
        if fmt == "GIF":
            cmd = [*base, "-f", "gif", "-i", f"file:{source}", *scale, *_ffmpeg_output_args(out)]
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
            stderr = proc.stderr
            returncode = proc.returncode
        else:
            returncode, stderr = _pipe_frames(img, base, size, out, orientation=orientation, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ProcessingTimeout(f"Converting the animation took longer than {timeout:g}s; try a shorter one.")
    except FileNotFoundError:
        raise ProcessingError("The video encoder is not available on the server.", retryable=True)
    if returncode != 0 or not out.exists():
        detail = stderr.decode(errors="replace").strip()[-300:]
        raise ProcessingError(f"The animation could not be converted to video ({detail}).")
    return VariantFile(name="mp4", path=out, mime_type="video/mp4", width=size[0], height=size[1])


def _pipe_frames(
    img: Image.Image, base: list[str], size: tuple[int, int], out: Path, *, orientation: int, timeout: float
) -> tuple[int, bytes]:
    """Feed Pillow-decoded frames to ffmpeg at a constant rate, repeating frames to keep their timing."""
    deadline = time.monotonic() + timeout
    stored = (size[1], size[0]) if orientation in (5, 6, 7, 8) else size
    cmd = [
        *base,
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}", "-r", str(MP4_PIPE_FPS),
        "-i", "pipe:0",
        "-vf", "format=yuv420p",
        *_ffmpeg_output_args(out),
    ]  # fmt: skip
    stderr_path = out.with_suffix(".log")
    with open(stderr_path, "wb") as stderr_file:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr_file)
        try:
            frame_ms = 1000 / MP4_PIPE_FPS
            index = 0
            while True:
                try:
                    img.seek(index)
                except EOFError:
                    break
                frame = _flatten(img.convert("RGBA")).resize(stored, RESAMPLE, reducing_gap=3.0)
                if orientation in TRANSPOSE:
                    frame = frame.transpose(TRANSPOSE[orientation])
                repeats = max(1, round(int(img.info.get("duration") or 100) / frame_ms))
                data = frame.tobytes()
                try:
                    for _ in range(repeats):
                        proc.stdin.write(data)
                except BrokenPipeError:
                    break  # ffmpeg gave up; its exit status and log say why
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(cmd, timeout)
                index += 1
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            returncode = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            img.seek(0)
    stderr = stderr_path.read_bytes()
    stderr_path.unlink(missing_ok=True)
    return returncode, stderr
