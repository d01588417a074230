"""Cues, WebVTT and plain text for transcripts (W3C WebVTT, https://www.w3.org/TR/webvtt1/).

The plain text of a transcript has one cue per line, so a creator who edits it line by line keeps
every cue's timing (``retime``)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .base import Segment, Word

MAX_CUE_SECONDS = 6.0  # a caption longer than this is hard to read along with
MAX_CUE_WORDS = 14
PAUSE_SECONDS = 0.6  # a pause this long starts a new cue

_TIMING = re.compile(r"^\s*((?:\d+:)?\d{2}:\d{2}\.\d{3})\s+-->\s+((?:\d+:)?\d{2}:\d{2}\.\d{3})(?:\s+.*)?$")


class CaptionsError(ValueError):
    """Text that is not valid WebVTT (``parse_webvtt``)."""


def cues_from_words(
    words: Iterable[Word], *, max_seconds: float = MAX_CUE_SECONDS, max_words: int = MAX_CUE_WORDS
) -> list[Segment]:
    """Group timed words into caption cues: a pause of ``PAUSE_SECONDS``, ``max_seconds`` or
    ``max_words`` starts a new cue. Each cue's confidence is the mean of its words'."""
    cues: list[Segment] = []
    current: list[Word] = []

    def flush() -> None:
        if current:
            cues.append(
                Segment(
                    start=round(current[0].start, 3),
                    end=round(max(current[-1].end, current[0].start + 0.001), 3),
                    text=" ".join(w.text for w in current),
                    confidence=round(sum(w.confidence for w in current) / len(current), 4),
                )
            )
            current.clear()

    for word in words:
        if current and (
            word.start - current[-1].end >= PAUSE_SECONDS
            or word.end - current[0].start > max_seconds
            or len(current) >= max_words
        ):
            flush()
        current.append(word)
    flush()
    return cues


def timestamp(seconds: float) -> str:
    """``HH:MM:SS.mmm`` as WebVTT writes it."""
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _seconds(stamp: str) -> float:
    parts = stamp.split(":")
    hours = int(parts[0]) if len(parts) == 3 else 0
    minutes, rest = int(parts[-2]), parts[-1]
    secs, millis = rest.split(".")
    return hours * 3600 + minutes * 60 + int(secs) + int(millis) / 1000


def _clean(text: str) -> str:
    """One line of cue text: no line breaks, no ``-->`` (it would end the cue), no markup."""
    text = re.sub(r"\s+", " ", text).strip()
    return text.replace("-->", "->").replace("<", "‹").replace(">", "›")


def render_webvtt(segments: Iterable[Segment], *, language: str = "") -> str:
    """A WebVTT file for ``segments`` (numbered cues, one line of text each)."""
    out = ["WEBVTT"]
    if language:
        out[0] += f"\nLanguage: {language}"
    out.append("")
    for number, segment in enumerate(segments, start=1):
        text = _clean(segment.text)
        if not text:
            continue
        out += [str(number), f"{timestamp(segment.start)} --> {timestamp(segment.end)}", text, ""]
    return "\n".join(out)


def parse_webvtt(text: str) -> list[Segment]:
    """The cues of a WebVTT file as ``Segment``s (confidence 1.0). Raises ``CaptionsError`` when
    the header is missing, a timing line is malformed, or a cue ends before it starts."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not lines or not lines[0].lstrip("\ufeff").startswith("WEBVTT"):
        raise CaptionsError("A WebVTT file starts with WEBVTT.")
    cues: list[Segment] = []
    i = 1
    while i < len(lines):
        line = lines[i]
        if "-->" in line:
            match = _TIMING.match(line)
            if not match:
                raise CaptionsError(f"Line {i + 1}: malformed cue timing {line!r}.")
            start, end = _seconds(match.group(1)), _seconds(match.group(2))
            if end < start:
                raise CaptionsError(f"Line {i + 1}: the cue ends before it starts.")
            body = []
            i += 1
            while i < len(lines) and lines[i].strip():
                body.append(lines[i].strip())
                i += 1
            cues.append(Segment(start=start, end=end, text=" ".join(body), confidence=1.0))
        i += 1
    return cues


def plain_text(segments: Iterable[Segment]) -> str:
    """The transcript as text: one cue per line."""
    return "\n".join(_clean(s.text) for s in segments if _clean(s.text)) + "\n"


def retime(segments: list[Segment], text: str) -> list[Segment]:
    """Put edited ``text`` on the original cues' timings. The same number of non-empty lines as cues:
    line ``n`` replaces cue ``n``. Otherwise the words are spread over the cues in proportion to each
    cue's length. Edited cues have confidence 1.0 (a person wrote them). Raises ``CaptionsError`` when
    there are no cues to time the text with."""
    lines = [_clean(line) for line in text.splitlines() if _clean(line)]
    if not segments:
        raise CaptionsError("This transcript has no timed cues to put the text on.")
    if len(lines) == len(segments):
        return [Segment(s.start, s.end, line, 1.0) for s, line in zip(segments, lines, strict=True)]
    words = " ".join(lines).split()
    total = sum(max(s.end - s.start, 0.001) for s in segments)
    out: list[Segment] = []
    taken = 0
    elapsed = 0.0
    for index, segment in enumerate(segments):
        elapsed += max(segment.end - segment.start, 0.001)
        upto = len(words) if index == len(segments) - 1 else round(len(words) * elapsed / total)
        chunk = words[taken:upto]
        taken = max(taken, upto)
        if chunk:
            out.append(Segment(segment.start, segment.end, " ".join(chunk), 1.0))
    return out


# --- HLS (RFC 8216): a WebVTT subtitle rendition beside a video's HLS ladder ---------------------------

SUBTITLE_GROUP = "subs"


def subtitle_playlist(*, duration: float, vtt_name: str) -> str:
    """A VOD media playlist with the whole WebVTT file as its one segment (RFC 8216 §3.5)."""
    length = max(duration, 0.001)
    return (
        "#EXTM3U\n#EXT-X-VERSION:3\n"
        f"#EXT-X-TARGETDURATION:{max(1, int(-(-length // 1)))}\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n"
        f"#EXTINF:{length:.3f},\n{vtt_name}\n#EXT-X-ENDLIST\n"
    )


def with_subtitles(master: str, *, uri: str, language: str, name: str) -> str:
    """``master`` (an HLS master playlist) with one ``#EXT-X-MEDIA:TYPE=SUBTITLES`` rendition at
    ``uri`` (relative), and every ``#EXT-X-STREAM-INF`` naming its group. Idempotent: an earlier
    subtitle rendition of ours is replaced. Raises ``CaptionsError`` for text that is not a master
    playlist."""
    lines = master.replace("\r\n", "\n").split("\n")
    if (
        not lines
        or lines[0].strip() != "#EXTM3U"
        or not any(line.startswith("#EXT-X-STREAM-INF") for line in lines)
    ):
        raise CaptionsError("Not an HLS master playlist.")
    media = (
        f'#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="{SUBTITLE_GROUP}",NAME="{name}",DEFAULT=NO,'
        f'AUTOSELECT=YES,FORCED=NO,LANGUAGE="{language}",URI="{uri}"'
    )
    out: list[str] = []
    for line in lines:
        if line.startswith("#EXT-X-MEDIA:") and f'GROUP-ID="{SUBTITLE_GROUP}"' in line:
            continue  # ours, from an earlier run
        if line.startswith("#EXT-X-STREAM-INF") and "SUBTITLES=" not in line:
            line = f'{line},SUBTITLES="{SUBTITLE_GROUP}"'
        out.append(line)
    at = next(i for i, line in enumerate(out) if line.startswith("#EXT-X-STREAM-INF"))
    out.insert(at, media)
    return "\n".join(out)
