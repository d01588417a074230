"""Decide what a file is from its first bytes, never from its name or the client's word."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sniffed:
    kind: str  # image | video | audio
    mime_type: str


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


def sniff(head: bytes) -> Sniffed | None:
    """``head`` is the first few KB. Returns None for anything we do not accept (SVG, text, PDF…)."""
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "image/jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "image/png")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("image", "image/gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("image", "image/webp")
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return Sniffed("audio", "audio/wav")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed("video", "video/x-msvideo")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _FTYP_BRANDS:
            kind, mime = _FTYP_BRANDS[brand]
            return Sniffed(kind, mime)
        return Sniffed("video", "video/mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Sniffed("video", "video/webm" if b"webm" in head[:64] else "video/x-matroska")
    if head.startswith(b"fLaC"):
        return Sniffed("audio", "audio/flac")
    if head.startswith(b"OggS"):
        # Ogg carries audio (Vorbis/Opus/FLAC) or video (Theora); the codec header is in the first page.
        return Sniffed("video", "video/ogg") if b"\x80theora" in head[:512] else Sniffed("audio", "audio/ogg")
    if head.startswith(b"ID3") or (
        len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06
    ):
        return Sniffed("audio", "audio/mpeg")
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return Sniffed("audio", "audio/aac")
    if head.startswith(b"\x47") and len(head) > 188 and head[188:189] == b"\x47":
        return Sniffed("video", "video/mp2t")
    return None
