"""The sniffer knows every container the processors read and nothing more; the kind follows the
tracks, not the container (issue 11 rows 4 and 5)."""

import json
import subprocess
from pathlib import Path

import pytest

from media import storage
from media.models import Media
from media.processors import ffmpeg
from media.processors.tracks import NO_VIDEO_TRACK
from media.sniff import DEMUXERS, REFUSED, sniff
from tests.conftest import client_for
from tests.factories import PostFactory
from tests.media.corpus import generate as g

# One generated file per demuxer of the allow-lists (and the container a user knows it as).
BY_DEMUXER = {
    "mov": [("mp4", g.mp4_h264), ("m4a", g.alac_m4a), ("3gp", g.h263_3gp), ("mov", g.prores)],
    "matroska": [("mkv", g.mka), ("webm", g.webm_opus_voice)],
    "avi": [("avi", g.avi_mpeg4)],
    "mpegts": [
        ("ts", g.mpegts),
        ("m2ts", lambda d: g.interlaced(d, height=480, field_order="tff", container="m2ts")),
    ],
    "flv": [("flv", g.flv)],
    "ogg": [("ogv", g.ogv), ("opus", g.opus_ogg)],
    "mpeg": [("vob", g.mpeg2_anamorphic)],
    "asf": [("wmv", g.wmv), ("wma", g.wma)],
    "mp3": [("mp3", g.mp3_cover), ("mp3-broken-id3", g.mp3_broken_id3)],
    "wav": [("wav", g.wav_float)],
    "flac": [("flac", g.flac_cover)],
    "aac": [("aac", g.adts)],
    "aiff": [("aiff", g.aiff)],
    "caf": [("caf", g.caf)],
    "w64": [("w64", g.w64)],
    "wv": [("wv", g.wavpack)],
    "amr": [("amr", lambda d: g.amr_nb(d, "amr"))],
    "gif": [("gif", g.gif_animated)],
}
CASES = [(demuxer, label, build) for demuxer, files in BY_DEMUXER.items() for label, build in files]


def _ffprobe_format(path: Path) -> list[str]:
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", str(path)]
    out = subprocess.run(cmd, check=True, capture_output=True).stdout
    return json.loads(out)["format"]["format_name"].split(",")


def test_sniffer_knows_exactly_the_processors_demuxers():
    assert DEMUXERS == ffmpeg.ALL_DEMUXERS
    assert set(BY_DEMUXER) == ffmpeg.ALL_DEMUXERS  # and each is exercised below with a real file
    # The kind follows the tracks: every container that can carry video can carry sound only too.
    assert ffmpeg.VIDEO_DEMUXERS <= ffmpeg.AUDIO_DEMUXERS


@pytest.mark.parametrize("demuxer, label, build", CASES, ids=[f"{d}-{label}" for d, label, _ in CASES])
def test_every_allowed_container_is_sniffed_as_its_demuxer(tmp_path, demuxer, label, build):
    path = build(tmp_path)
    found = sniff(path.read_bytes()[:4096])
    assert found is not None, f"{label} refused by the sniffer"
    assert found.demuxer == demuxer
    assert demuxer in _ffprobe_format(path)  # ffmpeg itself reads it with that demuxer


@pytest.mark.parametrize(
    "build, reason",
    [(g.au, REFUSED["audio/basic"]), (g.mxf, REFUSED["application/mxf"]), (g.tiff, REFUSED["image/tiff"])],
    ids=["au", "mxf", "tiff"],
)
def test_refused_containers_get_their_reason(tmp_path, user, build, reason):
    path = build(tmp_path)
    assert sniff(path.read_bytes()[:4096]) is None
    for post_type in ("video", "audio", "image"):
        post = PostFactory(author=user, type=post_type, body="")
        r = client_for(user).post(
            f"/api/v1/content/posts/{post.pk}/media", {"file": path.open("rb")}, format="multipart"
        )
        assert r.status_code == 415, r.content
        assert r.json()["code"] == "unsupported_media_type" and r.json()["detail"] == reason
    assert not Media.objects.exists()


def test_raw_mpeg_video_elementary_stream_is_refused(tmp_path):
    path = g.ff(tmp_path / "raw.m2v", *g.quadrants_video(), "-c:v", "mpeg2video", "-f", "mpeg2video")
    assert sniff(path.read_bytes()[:4096]) is None


def _attach(user, post, path: Path):
    return client_for(user).post(
        f"/api/v1/content/posts/{post.pk}/media", {"file": path.open("rb")}, format="multipart"
    )


AUDIO_ONLY = [
    (g.webm_opus_voice, "audio/webm"),
    (g.mp4_audio_only, "audio/mp4"),
    (g.alac_m4a, "audio/mp4"),
    (g.opus_ogg, "audio/ogg"),
    (g.mka, "audio/x-matroska"),
    (g.wma, "audio/x-ms-wma"),
    (lambda d: g.amr_nb(d, "3gp"), "audio/3gpp"),
    (g.ts_audio_only, "audio/mp2t"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "build, mime", AUDIO_ONLY, ids=["webm", "mp4", "m4a", "ogg", "mkv", "wma", "3gp", "ts"]
)
def test_audio_only_file_in_a_video_container_is_audio(tmp_path, user, build, mime):
    path = build(tmp_path)
    audio_post = PostFactory(author=user, type="audio", body="")
    r = _attach(user, audio_post, path)
    assert r.status_code == 201, r.content
    assert (r.json()["kind"], r.json()["mime_type"]) == ("audio", mime)
    media = Media.objects.get(pk=r.json()["id"])
    assert media.metadata["kind_from"] == "tracks" and "tracks_pending" not in media.metadata

    video_post = PostFactory(author=user, type="video", body="")
    r = _attach(user, video_post, path)
    assert r.status_code == 415
    assert r.json() == {"code": "unsupported_media_type", "detail": NO_VIDEO_TRACK}


@pytest.mark.django_db
def test_video_file_on_an_audio_post_says_post_it_as_video(tmp_path, user):
    post = PostFactory(author=user, type="audio", body="")
    r = _attach(user, post, g.vp8_webm(tmp_path))
    assert r.status_code == 415 and r.json()["detail"] == "This file has a video track; post it as a video."
    video_post = PostFactory(author=user, type="video", body="")
    r = _attach(user, video_post, g.vp8_webm(tmp_path))
    assert r.status_code == 201 and (r.json()["kind"], r.json()["mime_type"]) == ("video", "video/webm")


@pytest.mark.django_db
def test_audio_with_cover_art_is_audio_not_video(tmp_path, user):
    """An attached picture (cover) is not a picture track: an M4A with a cover stays audio."""
    path = g.ff(
        tmp_path / "cover.m4a",
        *g.tone(d=1),
        *g._cover_args(),
        *("-map", "0:a", "-map", "1:v", "-c:a", "aac", "-c:v", "png", "-frames:v", "1"),
        *("-disposition:v:0", "attached_pic"),
    )
    post = PostFactory(author=user, type="video", body="")
    assert _attach(user, post, path).json()["detail"] == NO_VIDEO_TRACK


@pytest.mark.django_db
def test_damaged_container_is_415_at_attach(tmp_path, user):
    data = g.webm_opus_voice(tmp_path).read_bytes()[:300]  # the EBML header, then nothing playable
    broken = tmp_path / "broken.webm"
    broken.write_bytes(data)
    post = PostFactory(author=user, type="audio", body="")
    r = _attach(user, post, broken)
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    assert not Media.objects.exists()


# --- uploads sent straight to S3: the worker reads the tracks ----------------------------------------


def _upload_and_attach(user, post, path: Path, monkeypatch, django_capture_on_commit_callbacks):
    """The direct-upload flow with the bytes treated as remote (S3): attach cannot probe them."""
    from urllib.parse import urlsplit

    data = path.read_bytes()
    c = client_for(user)
    target = c.post(
        "/api/v1/content/uploads",
        {"filename": path.name, "content_type": "video/webm", "size": len(data)},
        format="json",
    ).json()
    parts = urlsplit(target["url"])
    put = client_for().generic("PUT", f"{parts.path}?{parts.query}", data, content_type="video/webm")
    assert put.status_code == 200
    monkeypatch.setattr(storage, "local_path", lambda key: None)  # as on S3: no local bytes at attach
    with django_capture_on_commit_callbacks(execute=True):
        r = c.post(
            f"/api/v1/content/posts/{post.pk}/media", {"upload_id": target["upload_id"]}, format="json"
        )
    return r


def _drain(broker, worker):
    for queue in ("media.image", "media.video", "media.audio"):
        if queue in broker.queues:
            broker.join(queue, fail_fast=False)
    worker.join()


def test_remote_voice_note_on_audio_post_is_processed_as_audio(
    tmp_path, user, broker, worker, monkeypatch, django_capture_on_commit_callbacks
):
    post = PostFactory(author=user, type="audio", body="")
    r = _upload_and_attach(
        user, post, g.webm_opus_voice(tmp_path), monkeypatch, django_capture_on_commit_callbacks
    )
    assert r.status_code == 201, r.content
    assert (r.json()["kind"], r.json()["mime_type"]) == ("audio", "audio/webm")
    assert Media.objects.get(pk=r.json()["id"]).metadata["tracks_pending"] is True
    _drain(broker, worker)
    media = Media.objects.get(pk=r.json()["id"])
    assert media.processing_status == "ready", media.processing_error
    assert media.kind == "audio" and "m4a" in media.variants
    assert media.metadata["kind_from"] == "tracks" and "tracks_pending" not in media.metadata
    assert 1.9 < media.duration_seconds < 2.2


def test_remote_voice_note_on_video_post_fails_with_what_to_do(
    tmp_path, user, broker, worker, monkeypatch, django_capture_on_commit_callbacks
):
    post = PostFactory(author=user, type="video", body="")
    r = _upload_and_attach(
        user, post, g.webm_opus_voice(tmp_path), monkeypatch, django_capture_on_commit_callbacks
    )
    assert r.status_code == 201 and r.json()["kind"] == "video"  # the tracks are not known yet
    _drain(broker, worker)
    media = Media.objects.get(pk=r.json()["id"])
    assert media.processing_status == "failed"
    assert media.processing_error == NO_VIDEO_TRACK
    assert media.failed_permanently and media.attempts == 1


def test_remote_video_on_video_post_keeps_its_kind(
    tmp_path, user, broker, worker, monkeypatch, django_capture_on_commit_callbacks
):
    post = PostFactory(author=user, type="video", body="")
    r = _upload_and_attach(user, post, g.vp8_webm(tmp_path), monkeypatch, django_capture_on_commit_callbacks)
    _drain(broker, worker)
    media = Media.objects.get(pk=r.json()["id"])
    assert media.processing_status == "ready", media.processing_error
    assert (media.kind, media.width, media.height) == ("video", 320, 180)
    assert media.metadata["kind_from"] == "tracks"
