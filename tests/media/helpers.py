import hashlib
import io

from PIL import Image


def jpeg_bytes(w: int = 64, h: int = 48, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bytes(w: int = 64, h: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (w, h), (0, 128, 255, 128)).save(buf, "PNG")
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_file(name: str, data: bytes, content_type: str = "application/octet-stream"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type=content_type)


def scene_image(seed: int, size: tuple[int, int] = (1024, 768)) -> Image.Image:
    """A structured, photo-like test picture that differs in layout from seed to seed: a gradient
    background in a random direction, 6-14 filled shapes (ellipses, rectangles, polygons) of random
    sizes and colours, a few lines, and mild noise. Two seeds give unrelated pictures (PDQ distance
    around 128); never flat, so PDQ quality is high."""
    import numpy as np
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    base = (c0[None, None, :] * (1 - ramp[..., None]) + c1[None, None, :] * ramp[..., None]).astype(np.uint8)
    img = Image.fromarray(base, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 15))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1, y1 = x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 10, h // 2))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            points = [
                (int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(int(rng.integers(3, 7)))
            ]
            draw.polygon(points, fill=colour)
    for _ in range(int(rng.integers(2, 8))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.line(
            [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(2)],
            fill=colour,
            width=int(rng.integers(2, 12)),
        )
    noisy = np.asarray(img, dtype=np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def image_bytes(img: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    """``img`` encoded (JPEG quality 90 unless ``quality`` is given)."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        options.setdefault("quality", 90)
    img.save(buf, fmt, **options)
    return buf.getvalue()


def reencoded_copy(img: Image.Image, *, scale: float = 0.5, crop: float = 0.04, quality: int = 60) -> bytes:
    """What a re-uploader does to a blocked picture: crop ``crop`` off each edge, resize by
    ``scale``, re-encode as JPEG at ``quality``."""
    w, h = img.size
    dx, dy = int(w * crop), int(h * crop)
    copy = img.crop((dx, dy, w - dx, h - dy))
    copy = copy.resize(
        (max(1, int(copy.width * scale)), max(1, int(copy.height * scale))), Image.Resampling.LANCZOS
    )
    return image_bytes(copy, quality=quality)
