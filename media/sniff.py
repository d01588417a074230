"""Decide what a file is from its first bytes, never from its name or the client's word.

The sniffer knows exactly the containers the processors read, and nothing more: every container
here names the ffmpeg demuxer (``media.processors.ffmpeg``'s allow-lists) or the Pillow decoder
(``media.processors.image.DECODERS``) that will open it, and ``tests/media/test_sniff.py`` checks
that the demuxers named here are the allow-lists, one generated file per demuxer.

Refused on purpose (415 ``unsupported_media_type``, with ``REFUSED``'s reason):

* TIFF: not one of the image decoders we allow (many sub-formats, a long history of decoder bugs);
* Sun/NeXT AU (``.snd``): a legacy format no phone, browser or recorder makes today;
* MXF: broadcast/camera masters; an OP-Atom clip keeps its sound in other files, and it is a large
  demuxer to expose for files that are meant to be transcoded before publishing anyway;
* raw MPEG elementary video (``00 00 01 B3``), SVG, PDF, text: not media we publish.

Some containers carry sound only or a picture too (MP4/MOV/3GP, Matroska/WebM, Ogg, ASF, MPEG-PS/TS,
FLV, AVI): for those ``Sniffed.tracks_decide`` is True, the kind here is only the container's usual
one, and the kind that counts is the one the tracks give (``media.processors.tracks``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sniffed:
    kind: str  # image | video | audio
    mime_type: str
    demuxer: str | None = None  # the ffmpeg demuxer that reads it; None for Pillow's still images
    tracks_decide: bool = False  # the container may hold audio only or video: its tracks say which


# Audio MIME type of a container that turned out to hold sound only.
AUDIO_MIME = {
    "video/mp4": "audio/mp4",
    "video/quicktime": "audio/mp4",
    "video/3gpp": "audio/3gpp",
    "video/3gpp2": "audio/3gpp2",
    "video/webm": "audio/webm",
    "video/x-matroska": "audio/x-matroska",
    "video/ogg": "audio/ogg",
    "video/x-ms-asf": "audio/x-ms-wma",
    "video/mpeg": "audio/x-mpeg-ps",
    "video/mp2t": "audio/mp2t",
    "video/x-flv": "audio/x-flv",
    "video/x-msvideo": "audio/x-msvideo",
}
VIDEO_MIME = {audio: video for video, audio in AUDIO_MIME.items() if video != "video/quicktime"}

# Every ffmpeg demuxer a sniffed container names (the test compares this with the processors' lists).
DEMUXERS = frozenset(
    {"mov", "matroska", "avi", "mpegts", "flv", "ogg", "mpeg", "asf"}  # video or audio
    | {"mp3", "wav", "flac", "aac", "aiff", "caf", "w64", "wv", "amr"}  # audio only
    | {"gif"}  # animated GIF, which image.py turns into an MP4 with ffmpeg
)

# What a user is told for the containers we recognise but refuse.
REFUSED = {
    "image/tiff": "TIFF images are not accepted; export the picture as PNG or JPEG and upload that.",
    "audio/basic": "Sun AU (.au/.snd) audio is not accepted; convert it to WAV, FLAC or MP3 first.",
    "application/mxf": "MXF camera/broadcast files are not accepted; export the clip as MP4 or MOV first.",
}

_FTYP_BRANDS = {
    # ISO base media: the major brand after "ftyp" says what it is.
    b"heic": ("image", "image/heic"),
    b"heix": ("image", "image/heic"),
    b"heim": ("image", "image/heic"),
    b"heis": ("image", "image/heic"),
    b"hevc": ("image", "image/heic"),
    b"mif1": ("image", "image/heif"),
    b"msf1": ("image", "image/heif"),
    b"avif": ("image", "image/avif"),
    b"avis": ("image", "image/avif"),
    b"M4A ": ("audio", "audio/mp4"),
    b"M4B ": ("audio", "audio/mp4"),
    b"F4A ": ("audio", "audio/mp4"),
    b"qt  ": ("video", "video/quicktime"),
}
_ASF_GUID = bytes.fromhex("3026B2758E66CF11A6D900AA0062CE6C")
_W64_RIFF = b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00"
_W64_WAVE = b"wave\xf3\xac\xd3\x11\x8c\xd1\x00\xc0\x4f\x8e\xdb\x8a"


def _ts_sync(head: bytes, offset: int, packet: int) -> bool:
    """MPEG-TS: the 0x47 sync byte at the start of three consecutive packets (188 bytes, or 192 for
    the M2TS/AVCHD ``.MTS`` files camcorders write, which prefix each packet with a 4-byte clock)."""
    positions = [offset + packet * i for i in range(3)]
    return len(head) > positions[-1] and all(head[p] == 0x47 for p in positions)


def sniff(head: bytes) -> Sniffed | None:
    """What ``head`` (the first 4 KB of a file) is: kind, MIME type and the demuxer that reads it.

    Returns None for anything we do not accept (TIFF, AU, MXF, SVG, text, PDF…); ``refusal(head)``
    then has a more specific reason for the formats we recognise but refuse.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "image/jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "image/png")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("image", "image/gif", "gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("image", "image/webp")
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return Sniffed("audio", "audio/wav", "wav")
    if head.startswith(_W64_RIFF) and head[24:40] == _W64_WAVE:
        return Sniffed("audio", "audio/x-w64", "w64")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed("video", "video/x-msvideo", "avi", tracks_decide=True)
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _FTYP_BRANDS:
            kind, mime = _FTYP_BRANDS[brand]
            if kind == "image":
                return Sniffed(kind, mime)
            return Sniffed(kind, mime, "mov", tracks_decide=True)
        if brand.startswith(b"3g2"):
            return Sniffed("video", "video/3gpp2", "mov", tracks_decide=True)
        if brand.startswith(b"3gp") or brand.startswith(b"3ge") or brand.startswith(b"3gg"):
            return Sniffed("video", "video/3gpp", "mov", tracks_decide=True)
        return Sniffed("video", "video/mp4", "mov", tracks_decide=True)
    if head[4:8] in (b"moov", b"mdat", b"free", b"wide") and head[:2] == b"\x00\x00":
        # Old QuickTime files start with a movie atom, no "ftyp".
        return Sniffed("video", "video/quicktime", "mov", tracks_decide=True)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        mime = "video/webm" if b"webm" in head[:64] else "video/x-matroska"
        return Sniffed("video", mime, "matroska", tracks_decide=True)
    if head.startswith(b"fLaC"):
        return Sniffed("audio", "audio/flac", "flac")
    if head.startswith(b"OggS"):
        # Ogg carries audio (Vorbis/Opus/FLAC) or video (Theora, VP8); the tracks decide.
        if b"\x80theora" in head[:512]:
            return Sniffed("video", "video/ogg", "ogg", tracks_decide=True)
        return Sniffed("audio", "audio/ogg", "ogg", tracks_decide=True)
    if head.startswith(_ASF_GUID):
        return Sniffed("video", "video/x-ms-asf", "asf", tracks_decide=True)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return Sniffed("audio", "audio/aiff", "aiff")
    if head.startswith(b"caff\x00\x01"):
        return Sniffed("audio", "audio/x-caf", "caf")
    if head.startswith(b"wvpk"):
        return Sniffed("audio", "audio/x-wavpack", "wv")
    if head.startswith(b"#!AMR\n") or head.startswith(b"#!AMR-WB\n"):
        return Sniffed("audio", "audio/amr", "amr")
    if head.startswith(b"FLV\x01"):
        return Sniffed("video", "video/x-flv", "flv", tracks_decide=True)
    if head.startswith(b"\x00\x00\x01\xba"):
        # MPEG program stream (DVD .VOB, .MPG): the pack header.
        return Sniffed("video", "video/mpeg", "mpeg", tracks_decide=True)
    if head.startswith(b"ID3") or (
        len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06
    ):
        return Sniffed("audio", "audio/mpeg", "mp3")
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return Sniffed("audio", "audio/aac", "aac")
    if _ts_sync(head, 0, 188) or _ts_sync(head, 4, 192):
        return Sniffed("video", "video/mp2t", "mpegts", tracks_decide=True)
    return None


def refusal(head: bytes) -> str | None:
    """The reason a user gets for a format we recognise and refuse on purpose (see ``REFUSED``)."""
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return REFUSED["image/tiff"]
    if head.startswith(b".snd"):
        return REFUSED["audio/basic"]
    if head.startswith(bytes.fromhex("060e2b34020501010d010201")):
        return REFUSED["application/mxf"]
    return None


def as_kind(found: Sniffed, kind: str) -> Sniffed:
    """``found`` re-labelled as ``kind`` (what its tracks are), with the matching MIME type."""
    if kind == found.kind:
        return found
    table = AUDIO_MIME if kind == "audio" else VIDEO_MIME
    return Sniffed(kind, table.get(found.mime_type, found.mime_type), found.demuxer, found.tracks_decide)
