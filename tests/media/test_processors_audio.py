"""AudioProcessor against real ffmpeg: tiny lavfi clips in, outputs measured with ffprobe/loudnorm."""

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from media.processors.audio import AudioProcessor, WaveformPeaks
from media.processors.base import MediaTooLarge, ProcessingTimeout, StepLog, UnsupportedMedia

FFMPEG = ["ffmpeg", "-hide_banner", "-v", "error", "-y"]
RAMP = "aevalsrc=exprs='0.5*sin(2*PI*440*t)*t/3|0.5*sin(2*PI*660*t)*t/3':sample_rate=44100:duration=3"


def make(path: Path, *args: str) -> Path:
    subprocess.run([*FFMPEG, *args, str(path)], check=True)
    return path


def probe(path: Path) -> dict:
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)


def integrated_loudness(path: Path) -> float:
    cmd = ["ffmpeg", "-hide_banner", "-i", str(path), "-af", "loudnorm=print_format=json", "-f", "null", "-"]
    log = subprocess.run(cmd, check=True, capture_output=True, text=True).stderr
    return float(json.loads(re.findall(r"\{[^{}]*\}", log)[-1])["input_i"])


def top_level_atoms(path: Path) -> list[str]:
    atoms, data, pos = [], path.read_bytes(), 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        atoms.append(data[pos + 4 : pos + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        pos += size or len(data)
    return atoms


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio-clips")
    ramp = make(d / "ramp.wav", "-f", "lavfi", "-i", RAMP)
    picture = ("-f", "lavfi", "-i", "testsrc2=size=200x200:duration=1")
    noise = ("-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.05:sample_rate=44100:duration=3")
    mp3 = make(
        d / "cover.mp3",
        *noise,
        *picture,
        *("-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame", "-c:v", "mjpeg", "-frames:v", "1"),
        *("-disposition:v:0", "attached_pic", "-id3v2_version", "3"),
    )
    m4a = make(
        d / "cover.m4a",
        *noise,
        *picture,
        *("-map", "0:a", "-map", "1:v", "-c:a", "aac", "-c:v", "png", "-frames:v", "1"),
        *("-disposition:v:0", "attached_pic"),
    )
    video = make(
        d / "clip.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:duration=1", "-f", "lavfi", "-i", "sine=duration=1"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest"),
    )
    silence = make(
        d / "silence.wav", "-f", "lavfi", "-i", "anullsrc=sample_rate=22050:channel_layout=mono", "-t", "2"
    )
    return {"ramp": ramp, "mp3": mp3, "m4a": m4a, "video": video, "silence": silence}


def run(source: Path, workdir: Path):
    steps = StepLog()
    return AudioProcessor().process(source=source, workdir=workdir, steps=steps), steps


def test_wav_is_normalised_to_aac_m4a_with_waveform(clips, tmp_path):
    result, steps = run(clips["ramp"], tmp_path)

    assert result.mime_type == "audio/wav"
    assert round(result.duration_seconds) == 3
    assert (result.metadata["sample_rate"], result.metadata["channels"]) == (44100, 2)
    [variant] = result.variants
    assert (variant.name, variant.mime_type) == ("m4a", "audio/mp4")
    info = probe(variant.path)
    [audio] = info["streams"]
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("aac", 44100, 2)
    assert abs(float(info["format"]["duration"]) - 3) < 0.1
    assert 100_000 < int(audio["bit_rate"]) < 160_000
    atoms = top_level_atoms(variant.path)
    assert atoms.index("moov") < atoms.index("mdat"), atoms

    loudness = result.metadata["loudness"]
    assert loudness["input_i"] > -13  # the ramp ends loud: it has to be turned down
    assert abs(loudness["output_i"] - -16) <= 1
    assert abs(integrated_loudness(variant.path) - -16) <= 1  # measured independently on the output

    waveform = result.metadata["waveform"]
    assert len(waveform) == 800 and all(0 <= v <= 1 for v in waveform)
    assert max(waveform) == 1.0
    assert waveform[5] < 0.1 and min(waveform[-50:]) > 0.9  # the ramp's shape, quiet to loud
    assert all(round(v, 3) == v for v in waveform)
    assert [s["name"] for s in steps.as_list()] == ["probe", "measure", "encode"]
    assert all(s["status"] == "ok" for s in steps.as_list())


@pytest.mark.parametrize(
    ("clip", "mime", "cover_mime"), [("mp3", "audio/mpeg", "image/jpeg"), ("m4a", "audio/mp4", "image/png")]
)
def test_cover_art_becomes_a_thumbnail_media(clips, tmp_path, clip, mime, cover_mime):
    result, _ = run(clips[clip], tmp_path)

    assert result.mime_type == mime
    assert result.metadata["has_cover"] is True
    assert abs(integrated_loudness(result.variants[0].path) - -16) <= 1
    assert [s["codec_type"] for s in probe(result.variants[0].path)["streams"]] == ["audio"]  # cover not kept
    [extra] = result.extra_media
    assert extra.kind == "thumbnail" and extra.mime_type == cover_mime
    assert extra.path.stat().st_size > 0
    from PIL import Image

    with Image.open(extra.path) as image:
        assert image.size == (200, 200)
    try:
        import media.processors.image  # noqa: F401
    except ImportError:
        assert extra.result is None
    else:
        assert extra.result is not None and extra.result.width == 200
        assert "thumb" in [v.name for v in extra.result.variants]


def test_silence_is_encoded_without_normalising(clips, tmp_path):
    result, _ = run(clips["silence"], tmp_path)

    assert result.metadata["loudness"]["input_i"] is None
    assert result.metadata["waveform"] == [0.0] * 800
    [audio] = probe(result.variants[0].path)["streams"]
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("aac", 22050, 1)


def test_video_sent_as_audio_is_refused(clips, tmp_path):
    with pytest.raises(UnsupportedMedia, match="is a video"):
        run(clips["video"], tmp_path)


def test_text_file_is_unsupported(tmp_path):
    text = tmp_path / "song.mp3"
    text.write_text("la la la, not a song\n" * 100)
    with pytest.raises(UnsupportedMedia):
        run(text, tmp_path / "work")


@pytest.mark.parametrize("name", ["song.mp3", "song.wav", "song.m4a"])
def test_hls_playlist_disguised_as_audio_reads_nothing(tmp_path, name):
    hostile = tmp_path / name
    hostile.write_text(
        "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    )
    steps = StepLog()
    with pytest.raises(UnsupportedMedia) as excinfo:
        AudioProcessor().process(source=hostile, workdir=tmp_path / "work", steps=steps)
    assert "root:" not in str(excinfo.value) + json.dumps(steps.as_list())
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != hostile:
            assert b"root:" not in path.read_bytes()


def test_too_long_audio_is_refused(clips, tmp_path, settings):
    settings.AUDIO_MAX_DURATION_SECONDS = 2
    with pytest.raises(MediaTooLarge, match=r"Audio is 3s; the limit is 2s"):
        run(clips["ramp"], tmp_path)


def test_timeout_stops_and_cleans_up(clips, tmp_path, settings):
    settings.AUDIO_TIMEOUT_FACTOR = 0.0
    settings.AUDIO_TIMEOUT_MIN_SECONDS = 0.01
    with pytest.raises(ProcessingTimeout):
        run(clips["mp3"], tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.is_file()]
    children = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_our_ffmpeg(p)]
    assert children == []


def _is_our_ffmpeg(proc: Path) -> bool:
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return False
    ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return ppid == os.getpid() and "ffmpeg" in stat[: stat.rindex(")")]


def _feed_in_odd_chunks(peaks: WaveformPeaks, samples: np.ndarray) -> None:
    data = samples.astype("<i2").tobytes()
    for start in range(0, len(data), 777):  # odd sizes split samples across chunks
        peaks.feed(data[start : start + 777])


def test_waveform_streaming_matches_whole_array_peaks():
    samples = (np.sin(np.linspace(0, 200 * np.pi, 80_000)) * np.linspace(0, 32767, 80_000)).astype(np.int16)
    peaks = WaveformPeaks(buckets=100, expected_samples=samples.size)
    _feed_in_odd_chunks(peaks, samples)

    expected = np.abs(samples.astype(np.int32)).reshape(100, -1).max(axis=1)
    assert peaks.samples == samples.size
    assert peaks.peaks() == [round(float(v), 3) for v in expected / expected.max()]


@pytest.mark.parametrize("expected_factor", [0.5, 2.0, 100.0])
def test_waveform_fills_every_bucket_when_the_duration_was_wrong(expected_factor):
    samples = np.full(40_000, 1000, dtype=np.int16)
    peaks = WaveformPeaks(buckets=800, expected_samples=int(samples.size * expected_factor))
    _feed_in_odd_chunks(peaks, samples)
    assert peaks.peaks() == [1.0] * 800


def test_quiet_audio_with_a_loud_peak_is_normalised_dynamically(tmp_path):
    """A linear gain up to -16 LUFS would push the click past -1.5 dBTP: loudnorm's dynamic mode."""
    source = make(
        tmp_path / "clicky.wav",
        "-f",
        "lavfi",
        "-i",
        "aevalsrc='0.02*sin(2*PI*440*t)+if(lt(mod(t\\,2)\\,0.002)\\,0.95\\,0)':s=44100:d=8",
    )
    result, _ = run(source, tmp_path / "out")
    loudness = result.metadata["loudness"]
    assert loudness["normalization_type"] == "dynamic"
    [variant] = result.variants
    assert abs(integrated_loudness(variant.path) - -16) <= 1


def test_quiet_audio_is_turned_up_linearly(tmp_path):
    source = make(
        tmp_path / "quiet.wav",
        "-f",
        "lavfi",
        "-i",
        "anoisesrc=color=pink:amplitude=0.02:sample_rate=44100:duration=4",
    )
    result, _ = run(source, tmp_path / "out")
    loudness = result.metadata["loudness"]
    assert loudness["normalization_type"] == "linear" and loudness["input_i"] < -30
    [variant] = result.variants
    assert abs(integrated_loudness(variant.path) - -16) <= 1


# --- issue 11: audio in any container that may carry sound only -------------------------------------


def _corpus(name):
    from tests.media.corpus import generate as g

    return {
        "webm": (g.webm_opus_voice, "audio/webm", "opus"),
        "mp4": (g.mp4_audio_only, "audio/mp4", "aac"),
        "wma": (g.wma, "audio/x-ms-wma", "wmav2"),
        "ts": (g.ts_audio_only, "audio/mp2t", "mp2"),
        "aiff": (g.aiff, "audio/aiff", "pcm_s16be"),
        "caf": (g.caf, "audio/x-caf", "pcm_s16le"),
        "amr": (lambda d: g.amr_nb(d, "amr"), "audio/amr", "amr_nb"),
        "flv": (
            lambda d: g.ff(d / "a.flv", *g.tone(d=2), "-c:a", "libmp3lame", "-ar", "44100", "-f", "flv"),
            "audio/x-flv",
            "mp3",
        ),
        "avi": (
            lambda d: g.ff(d / "a.avi", *g.tone(d=2), "-c:a", "pcm_s16le", "-f", "avi"),
            "audio/x-msvideo",
            "pcm_s16le",
        ),
        "mpeg-ps": (
            lambda d: g.ff(d / "a.mpg", *g.tone(d=2, rate=48000), "-c:a", "mp2", "-f", "vob"),
            "audio/x-mpeg-ps",
            "mp2",
        ),
    }[name]


@pytest.mark.parametrize("name", ["webm", "mp4", "wma", "ts", "aiff", "caf", "amr", "flv", "avi", "mpeg-ps"])
def test_sound_only_files_in_every_allowed_container_are_processed(tmp_path, name):
    """Every container of the video allow-list may carry sound only; the audio processor reads them."""
    build, mime, codec = _corpus(name)
    source = build(tmp_path)
    result, _ = run(source, tmp_path / "out")
    assert (result.mime_type, result.metadata["codec"]) == (mime, codec)
    assert 1.9 <= result.duration_seconds <= 2.2
    out = probe(result.variants[0].path)
    assert out["streams"][0]["codec_name"] == "aac"
    assert 1.8 <= float(out["format"]["duration"]) <= 2.3
