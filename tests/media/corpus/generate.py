"""Build the real-world media corpus at test time with ffmpeg and Pillow: no binary file is committed.

Each builder writes one small file into a folder and returns its path. Files carry a GPS position
where their format can (EXIF GPS, QuickTime ``location``, tags), so the corpus can check that no
output keeps it. Known colours sit at known places (``QUADRANTS``) so outputs can be checked for
orientation and colour. Builders that the Debian ffmpeg cannot encode directly say how the file is
made instead (AMR-NB: frames written by hand, then remuxed).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y"]
GPS_TEXT = "+48.8577+002.2950/"  # the Eiffel tower, as QuickTime writes a location
GPS_MARK = b"48.8577"  # must not appear in any output
RED, GREEN, BLUE, WHITE = (220, 30, 30), (30, 200, 40), (30, 40, 220), (235, 235, 235)
# The test picture: top-left red, top-right green, bottom blue (orientation is visible).
QUADRANTS = {(0.25, 0.25): RED, (0.75, 0.25): GREEN, (0.5, 0.75): BLUE}
VIDEO_QUADRANTS = (
    "color=c=0x1e28dc:s={w}x{h}:d={d}:r={r},format=yuv444p,"
    "drawbox=x=0:y=0:w={hw}:h={hh}:color=0xdc1e1e:t=fill,"
    "drawbox=x={hw}:y=0:w={hw}:h={hh}:color=0x1ec828:t=fill"
)


def ff(out: Path, *args: str) -> Path:
    """Run ffmpeg with ``args`` and write ``out``."""
    subprocess.run([*FFMPEG, *args, str(out)], check=True, capture_output=True)
    return out


def quadrants_video(w: int = 320, h: int = 180, d: float = 1, r: int = 25) -> list[str]:
    """lavfi input args: the test picture as video, with a moving white bar so frames differ."""
    src = VIDEO_QUADRANTS.format(w=w, h=h, d=d, r=r, hw=w // 2, hh=h // 2)
    # the bar runs along the bottom tenth, away from the points the tests sample
    src += f",drawbox=x='mod(t*{w},{w})':y={h - max(1, h // 10)}:w=8:h={max(1, h // 10)}:color=white:t=fill"
    return ["-f", "lavfi", "-i", src]


def tone(d: float = 1, rate: int = 44100, layout: str = "stereo") -> list[str]:
    channels = {"mono": 1, "stereo": 2, "5.1": 6}[layout]
    expr = "|".join(f"0.3*sin(2*PI*{220 * (i + 1)}*t)" for i in range(channels))
    return ["-f", "lavfi", "-i", f"aevalsrc='{expr}':s={rate}:d={d}:c={layout}"]


def test_picture(w: int, h: int) -> Image.Image:
    """The RGB test picture (``QUADRANTS``) at ``w``×``h``."""
    img = Image.new("RGB", (w, h), BLUE)
    img.paste(RED, (0, 0, w // 2, h // 2))
    img.paste(GREEN, (w // 2, 0, w, h // 2))
    return img


def gps_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PostflowCam"  # Make
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 27.72), 3: "E", 4: (2.0, 17.0, 40.2)})
    return exif


# --- images ---------------------------------------------------------------------------------------------

_UNDO = {  # the transpose that stores a picture so that EXIF orientation N shows it upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def jpeg_orientation(d: Path, orientation: int) -> Path:
    """A 320×200 picture stored rotated/flipped, with EXIF orientation ``orientation`` and GPS."""
    img = test_picture(320, 200)
    if orientation in _UNDO:
        img = img.transpose(_UNDO[orientation])
    out = d / f"orientation{orientation}.jpg"
    img.save(out, "JPEG", quality=92, exif=gps_exif(orientation))
    return out


def jpeg_progressive(d: Path) -> Path:
    out = d / "progressive.jpg"
    test_picture(800, 600).save(out, "JPEG", quality=90, progressive=True, exif=gps_exif())
    return out


def jpeg_cmyk(d: Path) -> Path:
    """CMYK JPEG (print exports): Pillow writes Adobe-inverted CMYK like Photoshop does."""
    out = d / "cmyk.jpg"
    test_picture(400, 300).convert("CMYK").save(out, "JPEG", quality=92)
    return out


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def icc_profile(description: str, colorants: tuple, gamma: float | None) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC display profile: D50-adapted ``colorants`` (rXYZ, gXYZ,
    bXYZ) and a pure ``gamma`` curve, or the sRGB curve as a 1024-entry table when None."""
    desc = description.encode("ascii") + b"\0"
    tags = {
        b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(desc)) + desc + b"\0" * 12 + b"\0" * 67,
        b"wtpt": _xyz_tag(0.9642, 1.0, 0.8249),
        b"rXYZ": _xyz_tag(*colorants[0]),
        b"gXYZ": _xyz_tag(*colorants[1]),
        b"bXYZ": _xyz_tag(*colorants[2]),
        b"cprt": b"text\0\0\0\0" + b"none\0",
    }
    if gamma is not None:
        curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))
    else:
        v = np.linspace(0, 1, 1024)
        table = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
        curve = b"curv\0\0\0\0" + struct.pack(">I", 1024) + (table * 65535).round().astype(">u2").tobytes()
    tags.update({b"rTRC": curve, b"gTRC": curve, b"bTRC": curve})
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags.items():
        while len(data) % 4:
            data += b"\0"
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = struct.pack(">I", size) + b"lcms" + bytes([2, 0x20, 0, 0]) + b"mntrRGB XYZ "
    header += b"\0" * 12 + b"acsp" + b"APPL" + b"\0" * 4 + b"\0" * 8 + b"\0" * 8 + b"\0" * 4
    header += _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 4
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


ADOBE_RGB = (
    (0.6097559, 0.3111242, 0.0194811),
    (0.2052401, 0.6256560, 0.0608902),
    (0.1492240, 0.0632197, 0.7448387),
)
DISPLAY_P3 = ((0.515121, 0.241196, -0.001053), (0.291977, 0.692245, 0.041885), (0.157104, 0.066574, 0.784073))
SRGB_D50 = (
    (0.4360747, 0.2225045, 0.0139322),
    (0.3850649, 0.7168786, 0.0971045),
    (0.1430804, 0.0606169, 0.7141733),
)
WIDE_PATCH = (60, 160, 60)  # a green inside both gamuts: converted it must change visibly


def wide_to_srgb(rgb: tuple[int, int, int], colorants: tuple, gamma: float | None) -> tuple[int, ...]:
    """The sRGB value of ``rgb`` in a matrix/TRC profile, by the published matrices (independent of
    LittleCMS, which the processor uses)."""
    v = np.array(rgb) / 255
    linear = v**gamma if gamma else np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    xyz = np.array(colorants).T @ linear
    srgb_linear = np.clip(np.linalg.solve(np.array(SRGB_D50).T, xyz), 0, 1)
    encoded = np.where(
        srgb_linear <= 0.0031308, srgb_linear * 12.92, 1.055 * srgb_linear ** (1 / 2.4) - 0.055
    )
    return tuple(int(round(c * 255)) for c in encoded)


def _wide_picture() -> Image.Image:
    img = test_picture(400, 300)
    img.paste(WIDE_PATCH, (150, 200, 250, 280))  # bottom centre patch
    return img


def jpeg_adobe_rgb(d: Path) -> Path:
    out = d / "adobergb.jpg"
    icc = icc_profile("Adobe RGB (1998) compatible", ADOBE_RGB, 563 / 256)
    _wide_picture().save(out, "JPEG", quality=95, icc_profile=icc, exif=gps_exif())
    return out


def heic_display_p3(d: Path) -> Path:
    import pillow_heif

    pillow_heif.register_heif_opener()
    out = d / "p3.heic"
    icc = icc_profile("Display P3 compatible", DISPLAY_P3, None)
    _wide_picture().save(out, "HEIF", quality=95, icc_profile=icc, exif=gps_exif())
    return out


def heic(d: Path) -> Path:
    import pillow_heif

    pillow_heif.register_heif_opener()
    out = d / "photo.heic"
    test_picture(640, 480).save(out, "HEIF", quality=90, exif=gps_exif())
    return out


def avif(d: Path) -> Path:
    """An 8-bit AVIF still (Pillow's libavif). A 12-bit AVIF cannot be made on this stack: Pillow's
    AVIF encoder writes 8 bits only, ffmpeg 5.1 has no AVIF muxer and this libheif has no AV1
    encoder; ``heic_high_depth`` covers a >8-bit HEIF still instead."""
    out = d / "photo.avif"
    test_picture(320, 240).save(out, "AVIF", quality=90, exif=gps_exif())
    return out


def heic_high_depth(d: Path) -> Path:
    """A 12-bit HEIC (libheif/x265 via pillow_heif from 16-bit RGB samples), like HDR phone stills."""
    import pillow_heif

    pillow_heif.options.SAVE_HDR_TO_12_BIT = True
    rgb16 = (np.asarray(test_picture(320, 240), dtype=np.uint16) * 257).astype("<u2")
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(320, 240), data=rgb16.tobytes())
    out = d / "hdr12.heic"
    heif.save(out, quality=95)
    return out


def png_16bit_grey(d: Path, *, big_endian: bool = False) -> Path:
    """512×256 16-bit greyscale PNG, a horizontal 0…65535 ramp (issue 11 row 1)."""
    ramp = np.tile(np.linspace(0, 65535, 512).round().astype(np.uint16), (256, 1))
    if big_endian:
        img = Image.frombytes("I;16B", (512, 256), ramp.astype(">u2").tobytes())
    else:
        img = Image.fromarray(ramp)
    out = d / ("grey16b.png" if big_endian else "grey16.png")
    img.save(out, "PNG")
    return out


def png_16bit_rgb(d: Path, *, alpha: bool) -> Path:
    """16-bit RGB(A) PNG of the test picture (ffmpeg writes rgb48be/rgba64be PNGs; Pillow cannot)."""
    src = d / "src8.png"
    test_picture(320, 240).save(src)
    out = d / ("rgba16.png" if alpha else "rgb16.png")
    if alpha:
        # left half transparent
        return ff(
            out,
            *("-i", str(src)),
            *("-vf", "format=rgba,geq=r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':a='if(lt(X,W/2),0,255)'"),
            *("-pix_fmt", "rgba64be", "-frames:v", "1"),
        )
    return ff(out, "-i", str(src), "-pix_fmt", "rgb48be", "-frames:v", "1")


def png_gamma_iccp(d: Path) -> Path:
    """A PNG with a gAMA chunk and an iCCP (the sRGB profile), as image editors write them."""
    from PIL import ImageCms

    buf = io.BytesIO()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    test_picture(300, 200).save(buf, "PNG", icc_profile=srgb)
    data = buf.getvalue()
    body = b"gAMA" + struct.pack(">I", 45455)
    import zlib

    chunk = struct.pack(">I", 4) + body + struct.pack(">I", zlib.crc32(body))
    out = d / "gamma.png"
    out.write_bytes(data[:33] + chunk + data[33:])  # right after IHDR
    return out


def png_odd(d: Path, w: int, h: int) -> Path:
    out = d / f"odd{w}x{h}.png"
    test_picture(w, h).save(out)
    return out


def jpeg_huge_exif_thumbnail(d: Path) -> Path:
    """A JPEG whose EXIF (APP1, at its 64 KB limit) is mostly a noisy embedded thumbnail, plus GPS."""
    rng = np.random.default_rng(1)
    thumb = io.BytesIO()
    noise = rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)
    quality = 95
    while True:
        thumb.seek(0)
        thumb.truncate()
        Image.fromarray(noise).save(thumb, "JPEG", quality=quality)
        if len(thumb.getvalue()) < 60_000:
            break
        quality -= 5
    tb = thumb.getvalue()
    # TIFF: IFD0 (Orientation, GPS pointer) -> IFD1 (JPEG thumbnail offset/length); GPS IFD; thumbnail.
    ifd0 = 8
    ifd0_size = 2 + 2 * 12 + 4
    ifd1 = ifd0 + ifd0_size
    ifd1_size = 2 + 3 * 12 + 4
    gps = ifd1 + ifd1_size
    gps_size = 2 + 2 * 12 + 4
    thumb_at = gps + gps_size
    t = b"II*\0" + struct.pack("<I", ifd0)
    t += (
        struct.pack("<H", 2) + struct.pack("<HHII", 0x0112, 3, 1, 1) + struct.pack("<HHII", 0x8825, 4, 1, gps)
    )
    t += struct.pack("<I", ifd1)
    t += struct.pack("<H", 3) + struct.pack("<HHII", 0x0103, 3, 1, 6)
    t += struct.pack("<HHII", 0x0201, 4, 1, thumb_at) + struct.pack("<HHII", 0x0202, 4, 1, len(tb))
    t += struct.pack("<I", 0)
    t += (
        struct.pack("<H", 2)
        + struct.pack("<HHI", 1, 2, 2)
        + b"N\0\0\0"
        + struct.pack("<HHI", 3, 2, 2)
        + b"E\0\0\0"
    )
    t += struct.pack("<I", 0)
    t += tb
    out = d / "hugeexif.jpg"
    test_picture(640, 480).save(out, "JPEG", quality=90, exif=b"Exif\0\0" + t)
    return out


def webp_lossless_alpha(d: Path) -> Path:
    img = test_picture(300, 200).convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize((300, 200)).point(lambda v: 0 if v < 128 else 255))
    out = d / "lossless.webp"
    img.save(out, "WEBP", lossless=True, exif=gps_exif())
    return out


def _frames(n: int = 6, w: int = 160, h: int = 120) -> list[Image.Image]:
    frames = []
    for i in range(n):
        img = test_picture(w, h)
        img.paste(WHITE, (i * w // n, h - 20, i * w // n + 10, h - 5))
        frames.append(img)
    return frames


def gif_animated(d: Path) -> Path:
    out = d / "anim.gif"
    frames = _frames()
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out


def gif_local_palettes(d: Path) -> Path:
    """Each frame with its own (local) colour table: frames of very different colours."""
    out = d / "localpal.gif"
    frames = [f.convert("P", palette=Image.Palette.ADAPTIVE, colors=16) for f in _frames(4)]
    tints = [(255, 255, 0), (0, 255, 255), (255, 0, 255), (128, 128, 128)]
    frames = [
        Image.blend(f.convert("RGB"), Image.new("RGB", f.size, t), 0.3).quantize(32)
        for f, t in zip(frames, tints, strict=True)
    ]
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=120, loop=0, optimize=False)
    return out


def apng(d: Path) -> Path:
    out = d / "anim.png"
    frames = _frames()
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out


def webp_animated(d: Path) -> Path:
    out = d / "anim.webp"
    frames = _frames()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out


def tiff(d: Path) -> Path:
    out = d / "scan.tiff"
    test_picture(200, 100).save(out, "TIFF")
    return out


# --- video ----------------------------------------------------------------------------------------------

_H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
_AAC = ["-c:a", "aac", "-b:a", "96k"]
_GPS = ["-metadata", f"location={GPS_TEXT}", "-metadata", f"comment=GPS {GPS_TEXT}"]


def mp4_h264(d: Path, name: str = "clip.mp4", *extra: str, w: int = 320, h: int = 180) -> Path:
    return ff(d / name, *quadrants_video(w, h), *tone(), *_H264, *_AAC, "-shortest", *_GPS, *extra)


def mp4_rotated(d: Path, rotation: int) -> Path:
    """H.264 with a display-matrix rotation (phones): stored landscape, shown rotated ``rotation``°
    counter-clockwise as ffmpeg 5.1's ``rotate`` tag writes it."""
    src = mp4_h264(d, f"src{rotation}.mp4")
    return ff(d / f"rot{rotation}.mp4", "-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={rotation}")


def mov_hdr(d: Path, transfer: str) -> Path:
    """SMPTE bars as HEVC Main10 BT.2020 with HLG (``arib-std-b67``) or PQ (``smpte2084``), in a
    QuickTime file as iPhones record; the SDR bars converted to that transfer with zscale."""
    zt = {"arib-std-b67": "arib-std-b67", "smpte2084": "smpte2084"}[transfer]
    return ff(
        d / f"hdr-{transfer}.mov",
        *("-f", "lavfi", "-i", "smptebars=s=320x180:d=1:r=25"),
        *tone(),
        *(
            "-vf",
            f"zscale=t={zt}:p=bt2020:m=2020_ncl:tin=bt709:pin=bt709:min=709:rin=tv:r=tv,format=yuv420p10le",
        ),
        *("-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1"),
        *("-x265-params", f"log-level=error:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc"),
        *("-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc"),
        *_AAC,
        "-shortest",
        *_GPS,
    )


def interlaced(d: Path, *, height: int, field_order: str, container: str) -> Path:
    """Interlaced H.264 (1080i TFF in M2TS with AC-3, as camcorders write ``.MTS``) or MPEG-2
    (480i BFF in a program stream, as DVDs): fields woven from a 50/60p moving test pattern, so
    moving edges comb (ffmpeg's ``idet`` calls the source TFF/BFF on every frame)."""
    w = {1080: 1920, 576: 720, 480: 720}[height]
    rate = 50 if height != 480 else 60
    src = f"testsrc2=s={w}x{height}:d=1:r={rate}"
    weave = "tinterlace=mode=interleave_top" if field_order == "tff" else "tinterlace=mode=interleave_bottom"
    vf = f"{weave},setfield={field_order}"
    if container == "m2ts":
        return ff(
            d / f"{height}i.mts",
            *("-f", "lavfi", "-i", src),
            *tone(layout="stereo"),
            *("-vf", vf, "-c:v", "libx264", "-preset", "ultrafast", "-flags", "+ildct+ilme"),
            *("-x264-params", "tff=1" if field_order == "tff" else "bff=1"),
            *("-c:a", "ac3", "-shortest", "-f", "mpegts", "-mpegts_m2ts_mode", "1"),
        )
    return ff(
        d / f"{height}i.mpg",
        *("-f", "lavfi", "-i", src),
        *tone(rate=48000),
        *(
            "-vf",
            vf,
            "-c:v",
            "mpeg2video",
            "-flags",
            "+ildct+ilme",
            "-top",
            "1" if field_order == "tff" else "0",
        ),
        *("-b:v", "4M", "-c:a", "mp2", "-shortest", "-f", "vob"),
    )


def webm_alpha(d: Path) -> Path:
    """VP9 with alpha: the left half transparent (black underneath, as encoders leave it), the right
    half opaque red."""
    src = (
        "color=c=0xdc1e1e@1.0:s=320x180:d=1:r=25,format=rgba,"
        "geq=r='if(lt(X,W/2),0,r(X,Y))':g='g(X,Y)':b='b(X,Y)':a='if(lt(X,W/2),0,255)'"
    )
    return ff(
        d / "alpha.webm",
        *("-f", "lavfi", "-i", src),
        *(
            "-c:v",
            "libvpx-vp9",
            "-pix_fmt",
            "yuva420p",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "500k",
        ),
        "-auto-alt-ref",
        "0",
    )


def vfr(d: Path) -> Path:
    """Variable frame rate (phones, screen recorders): every third frame dropped, timestamps kept."""
    return ff(
        d / "vfr.mp4",
        *quadrants_video(d=2, r=30),
        *("-vf", "select='not(eq(mod(n,5),2)+eq(mod(n,7),3))'", "-vsync", "vfr"),
        *_H264,
        *_GPS,
    )


def one_frame(d: Path) -> Path:
    return ff(d / "oneframe.mp4", *quadrants_video(), "-frames:v", "1", *_H264)


def obs_two_tracks(d: Path) -> Path:
    """OBS's MKV: H.264, two AAC tracks (desktop + microphone)."""
    return ff(
        d / "obs.mkv",
        *quadrants_video(d=1.5),
        *tone(d=1.5),
        *tone(d=1.5, layout="mono"),
        *("-map", "0:v", "-map", "1:a", "-map", "2:a"),
        *_H264,
        *_AAC,
        *_GPS,
    )


def mpeg2_anamorphic(d: Path) -> Path:
    """DVD-style MPEG-2 in a program stream (pack header 00 00 01 BA), 720×576 with a 16:9 display."""
    return ff(
        d / "dvd.vob",
        *quadrants_video(720, 576),
        *tone(rate=48000),
        *("-c:v", "mpeg2video", "-aspect", "16:9", "-b:v", "3M", "-c:a", "mp2", "-shortest", "-f", "vob"),
    )


def prores(d: Path) -> Path:
    return ff(
        d / "prores.mov",
        *quadrants_video(),
        *tone(),
        "-c:v",
        "prores_ks",
        "-profile:v",
        "0",
        "-c:a",
        "pcm_s16le",
        "-shortest",
        *_GPS,
    )


def dnxhd(d: Path) -> Path:
    """DNxHR LB (DNxHD's resolution-independent profiles) in MOV."""
    return ff(
        d / "dnxhr.mov",
        *quadrants_video(320, 180),
        "-c:v",
        "dnxhd",
        "-profile:v",
        "dnxhr_lb",
        "-pix_fmt",
        "yuv422p",
        *_GPS,
    )


def avi_mpeg4(d: Path) -> Path:
    return ff(
        d / "xvid.avi",
        *quadrants_video(),
        *tone(),
        "-c:v",
        "mpeg4",
        "-q:v",
        "3",
        "-c:a",
        "libmp3lame",
        "-shortest",
    )


def h263_3gp(d: Path) -> Path:
    return ff(
        d / "phone.3gp",
        *quadrants_video(176, 144, r=15),
        *tone(rate=16000, layout="mono"),
        "-c:v",
        "h263",
        "-c:a",
        "aac",
        "-b:a",
        "32k",
        "-shortest",
        "-f",
        "3gp",
    )


def av1(d: Path, container: str) -> Path:
    return ff(
        d / f"av1.{container}",
        *quadrants_video(),
        *tone(),
        *("-c:v", "libsvtav1", "-preset", "12", "-crf", "40", "-pix_fmt", "yuv420p"),
        *(["-c:a", "libopus"] if container == "webm" else _AAC),
        "-shortest",
    )


def vp8_webm(d: Path) -> Path:
    return ff(
        d / "vp8.webm",
        *quadrants_video(),
        *tone(),
        "-c:v",
        "libvpx",
        "-deadline",
        "realtime",
        "-b:v",
        "500k",
        "-c:a",
        "libvorbis",
        "-shortest",
    )


def odd_video(d: Path, w: int, h: int) -> Path:
    """Odd dimensions need a format without 4:2:0 chroma pairs: H.264 High 4:4:4 (screen recorders)."""
    return ff(
        d / f"odd{w}x{h}.mp4",
        *quadrants_video(w, h),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"),
    )


def flv(d: Path) -> Path:
    return ff(
        d / "old.flv",
        *quadrants_video(),
        *tone(),
        "-c:v",
        "flv1",
        "-q:v",
        "3",
        "-c:a",
        "libmp3lame",
        "-ar",
        "44100",
        "-shortest",
    )


def wmv(d: Path) -> Path:
    return ff(
        d / "movie.wmv",
        *quadrants_video(),
        *tone(),
        "-c:v",
        "wmv2",
        "-q:v",
        "3",
        "-c:a",
        "wmav2",
        "-shortest",
        "-metadata",
        f"comment=GPS {GPS_TEXT}",
    )


def ogv(d: Path) -> Path:
    return ff(
        d / "movie.ogv",
        *quadrants_video(),
        *tone(),
        "-c:v",
        "libtheora",
        "-q:v",
        "7",
        "-c:a",
        "libvorbis",
        "-shortest",
    )


def mpegts(d: Path) -> Path:
    return ff(d / "stream.ts", *quadrants_video(), *tone(), *_H264, *_AAC, "-shortest", "-f", "mpegts")


def mxf(d: Path) -> Path:
    return ff(d / "camera.mxf", *quadrants_video(), "-c:v", "mpeg2video", "-b:v", "2M", "-f", "mxf")


# --- audio ----------------------------------------------------------------------------------------------


def _cover_args() -> list[str]:
    return ["-f", "lavfi", "-i", "color=c=0xdc1e1e:s=200x200:d=0.04"]


def mp3_cover(d: Path) -> Path:
    return ff(
        d / "song.mp3",
        *tone(d=2),
        *_cover_args(),
        *("-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame", "-c:v", "mjpeg", "-frames:v", "1"),
        *("-disposition:v:0", "attached_pic", "-id3v2_version", "3"),
        *("-metadata", f"comment=GPS {GPS_TEXT}"),
    )


def flac_cover(d: Path) -> Path:
    return ff(
        d / "song.flac",
        *tone(d=2),
        *_cover_args(),
        *("-map", "0:a", "-map", "1:v", "-c:a", "flac", "-c:v", "png", "-frames:v", "1"),
        *("-disposition:v:0", "attached_pic", "-metadata", f"comment=GPS {GPS_TEXT}"),
    )


def opus_ogg(d: Path) -> Path:
    return ff(
        d / "song.opus",
        *tone(d=2, rate=48000),
        "-c:a",
        "libopus",
        "-b:a",
        "64k",
        "-f",
        "ogg",
        "-metadata",
        f"comment=GPS {GPS_TEXT}",
    )


def vorbis_ogg(d: Path) -> Path:
    return ff(d / "song.ogg", *tone(d=2), "-c:a", "libvorbis")


def wav_float(d: Path) -> Path:
    return ff(d / "float.wav", *tone(d=2), "-c:a", "pcm_f32le")


def long_silence(d: Path) -> Path:
    """Ten minutes of digital silence (a forgotten recorder), FLAC so it stays tiny."""
    return ff(d / "silence.flac", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "600", "-c:a", "flac")


def ac3_51(d: Path, codec: str) -> Path:
    """5.1 AC-3 / E-AC-3 audio-only, in MP4 (raw .ac3 needs a demuxer we do not allow)."""
    return ff(
        d / f"surround-{codec}.mp4", *tone(d=2, rate=48000, layout="5.1"), "-c:a", codec, "-b:a", "384k"
    )


def flac_24_96(d: Path) -> Path:
    return ff(
        d / "hires.flac",
        *tone(d=2, rate=96000),
        "-c:a",
        "flac",
        "-sample_fmt",
        "s32",
        "-bits_per_raw_sample",
        "24",
    )


def amr_nb(d: Path, container: str) -> Path:
    """An AMR-NB voice memo. Debian's ffmpeg has no AMR encoder (libopencore-amrnb is not enabled),
    so the frames are written by hand: the ``#!AMR`` magic, then 12.2 kbit/s frames (mode 7, a
    1-byte header + 31 bytes of speech parameters; any bits decode) for 2 s at 50 frames/s. The
    ``3gp`` variant is that bitstream remuxed (``-c copy``) into 3GP, as old phones record it."""
    rng = np.random.default_rng(7)
    frames = b"".join(b"\x3c" + rng.integers(0, 255, 31, dtype=np.uint8).tobytes() for _ in range(100))
    raw = d / "memo.amr"
    raw.write_bytes(b"#!AMR\n" + frames)
    if container == "amr":
        return raw
    return ff(d / "memo.3gp", "-f", "amr", "-i", str(raw), "-c", "copy", "-f", "3gp")


def mp3_broken_id3(d: Path) -> Path:
    """An MP3 whose ID3v2.3 tag holds a frame claiming more bytes than the whole tag."""
    plain = ff(d / "plain.mp3", *tone(d=2), "-c:a", "libmp3lame", "-write_id3v2", "0", "-write_xing", "0")
    body = b"TIT2" + struct.pack(">I", 0x00FFFFFF) + b"\0\0" + b"\x03Broken title" + b"\0" * 100
    size = len(body)
    synchsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    out = d / "brokenid3.mp3"
    out.write_bytes(b"ID3\x03\x00\x00" + synchsafe + body + plain.read_bytes())
    return out


def alac_m4a(d: Path) -> Path:
    return ff(d / "lossless.m4a", *tone(d=2), "-c:a", "alac", "-metadata", f"location={GPS_TEXT}")


def webm_opus_voice(d: Path) -> Path:
    """What a browser's MediaRecorder makes for a voice note: WebM, one Opus track, no video."""
    return ff(
        d / "voice.webm",
        *tone(d=2, rate=48000, layout="mono"),
        "-c:a",
        "libopus",
        "-b:a",
        "32k",
        "-f",
        "webm",
    )


def mp4_audio_only(d: Path) -> Path:
    """Audio-only MP4 with the generic ``isom``/``mp42`` brand (not ``M4A ``)."""
    return ff(d / "audio.mp4", *tone(d=2), *_AAC, "-f", "mp4", "-metadata", f"location={GPS_TEXT}")


def mka(d: Path) -> Path:
    return ff(d / "audio.mkv", *tone(d=2), "-c:a", "libvorbis", "-f", "matroska")


def wma(d: Path) -> Path:
    return ff(d / "audio.wma", *tone(d=2), "-c:a", "wmav2", "-f", "asf")


def aiff(d: Path) -> Path:
    return ff(d / "audio.aiff", *tone(d=2), "-c:a", "pcm_s16be", "-f", "aiff")


def caf(d: Path) -> Path:
    return ff(d / "audio.caf", *tone(d=2), "-c:a", "pcm_s16le", "-f", "caf")


def w64(d: Path) -> Path:
    return ff(d / "audio.w64", *tone(d=2), "-c:a", "pcm_s16le", "-f", "w64")


def wavpack(d: Path) -> Path:
    return ff(d / "audio.wv", *tone(d=2), "-c:a", "wavpack", "-f", "wv")


def adts(d: Path) -> Path:
    return ff(d / "audio.aac", *tone(d=2), *_AAC, "-f", "adts")


def au(d: Path) -> Path:
    return ff(d / "audio.au", *tone(d=1), "-f", "au")


def ts_audio_only(d: Path) -> Path:
    return ff(d / "radio.ts", *tone(d=2), "-c:a", "mp2", "-f", "mpegts")


def gif_single(d: Path) -> Path:
    out = d / "still.gif"
    test_picture(120, 80).save(out)
    return out


def file_size(path: Path) -> int:
    return os.stat(path).st_size
