"""Transcripts through the API and HLS (issue 17): the subtitle rendition the speech step adds to a
video's HLS tree, and the creator's corrections (PATCH content/media/{id}/transcript), which a
published post's prescreen scores again."""

from __future__ import annotations

import hashlib
import io
import subprocess
from urllib.parse import urlsplit

import pytest
from django.db import transaction
from django.utils import timezone

from content.models import Post
from media import processing, storage
from media.models import Media, ProcessingStatus
from media.speech import captions
from moderation.models import AiReview
from tests.conftest import client_for
from tests.factories import PostFactory, UserFactory
from tests.media.helpers import upload_file
from tests.media.speech_audio import CLEAN, have_espeak, speech_file

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and ffmpeg are needed")


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_master_playlist_rewrite_is_idempotent():
    master = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=640x360\n360p/index.m3u8\n"
    once = captions.with_subtitles(master, uri="subs/en.m3u8", language="en", name="English")
    twice = captions.with_subtitles(once, uri="subs/en.m3u8", language="en", name="English")
    assert once == twice and once.count("TYPE=SUBTITLES") == 1
    lines = once.splitlines()
    media = lines.index(next(line for line in lines if line.startswith("#EXT-X-MEDIA:")))
    assert media < lines.index(next(line for line in lines if line.startswith("#EXT-X-STREAM-INF")))
    assert 'URI="subs/en.m3u8"' in lines[media] and 'LANGUAGE="en"' in lines[media]
    assert lines[media + 1].endswith(',SUBTITLES="subs"')
    with pytest.raises(captions.CaptionsError):
        captions.with_subtitles("#EXTM3U\n#EXTINF:4,\nseg.ts\n", uri="x", language="en", name="x")
    playlist = captions.subtitle_playlist(duration=7.25, vtt_name="en.vtt")
    assert "#EXT-X-TARGETDURATION:8" in playlist and "#EXTINF:7.250,\nen.vtt" in playlist


@needs_espeak
@pytest.mark.django_db(transaction=True)
def test_speech_step_adds_a_subtitle_rendition_to_the_hls_tree(broker, worker, settings, tmp_path):
    settings.SPEECH_PROVIDER = "pocketsphinx"
    owner = UserFactory()
    post = PostFactory(author=owner, type="video", body="", published=True)
    clip = tmp_path / "clip.mp4"
    speech_file(CLEAN[:1], clip, video=True)
    tree = tmp_path / "hls"
    tree.mkdir()
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-i", str(clip), "-c", "copy", "-f", "hls"]
        + ["-hls_time", "2", "-hls_playlist_type", "vod", "-master_pl_name", "master.m3u8"]
        + [str(tree / "index.m3u8")],
        check=True,
    )
    video = Media.objects.create(
        post=post,
        owner=owner,
        kind="video",
        processing_status="ready",
        mime_type="video/mp4",
        original_key="unused",
        duration_seconds=4.0,
        metadata={"has_audio": True},
    )
    folder = f"media/{owner.pk}/{video.pk}/hls"
    for path in tree.iterdir():
        storage.save(f"{folder}/{path.name}", path, None)
    rendition = storage.media_key(owner.pk, video.pk, "360p", ".mp4")
    storage.save(rendition, clip, "video/mp4")
    video.variants = {
        "360p": {"key": rendition, "mime_type": "video/mp4"},
        "hls": {"key": f"{folder}/master.m3u8", "mime_type": "application/vnd.apple.mpegurl"},
    }
    video.save(update_fields=["variants"])
    with transaction.atomic():
        processing._start_transcript(video)
    broker.join("media.speech", fail_fast=False)
    worker.join()

    transcript = Media.objects.get(parent=video, kind="transcript")
    assert transcript.processing_status == ProcessingStatus.READY, transcript.processing_error
    assert transcript.metadata["hls_subtitles"]["vtt_key"] == f"{folder}/subs/en.vtt"
    # What a player fetches: the master (through its signed prefix) names the rendition, which is there.
    hls_url = urlsplit(
        client_for(None).get(f"/api/v1/content/media/{video.pk}").json()["variants"]["hls"]["url"]
    )
    master = _body(client_for(None).get(hls_url.path)).decode()
    assert '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs"' in master and 'SUBTITLES="subs"' in master
    sub = client_for(None).get(hls_url.path.replace("master.m3u8", "subs/en.m3u8"))
    assert sub.status_code == 200 and b"en.vtt" in _body(sub)
    vtt = client_for(None).get(hls_url.path.replace("master.m3u8", "subs/en.vtt"))
    assert vtt.status_code == 200 and vtt["Content-Type"].startswith("text/vtt")
    assert captions.parse_webvtt(_body(vtt).decode())
    # ffprobe reads the rewritten master (video and audio intact) and the subtitle playlist (WebVTT).
    local = tmp_path / "fetched"
    for key in storage.list_prefix(folder):
        storage.download_to(key, local / key[len(folder) + 1 :])
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-allowed_extensions", "ALL", "-show_entries", "stream=codec_type"]
        + ["-of", "csv=p=0", str(local / "master.m3u8")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert {"video", "audio"} <= set(probe.stdout.split())
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-allowed_extensions", "ALL", "-show_entries", "stream=codec_name"]
        + ["-of", "csv=p=0", str(local / "subs" / "en.m3u8")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(probe.stdout.split()) == {"webvtt"}  # the program's stream and the stream itself


def _run(broker, worker, actor: str, media_id) -> None:
    broker.get_actor(actor).send(str(media_id))
    for queue in ("media.video", "media.speech"):
        broker.join(queue, fail_fast=False)
    worker.join()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@needs_espeak
@pytest.mark.django_db(transaction=True)
def test_subtitles_survive_reprocessing_and_the_master_etag_follows_its_bytes(
    broker, worker, settings, platform, tmp_path
):
    """A video processed by the worker (its HLS tree with every file's sha256 recorded), then its
    transcript (which rewrites the master), then a new processing attempt of the video (which writes
    a new tree): the master keeps the subtitle rendition, and its ETag is always its bytes' sha256."""
    settings.SPEECH_PROVIDER = "pocketsphinx"
    platform(processor_event_trigger_media_enabled=False)  # this test sends each step itself
    owner = UserFactory()
    post = PostFactory(author=owner, type="video", body="")
    clip = tmp_path / "clip.mp4"
    speech_file(CLEAN[:1], clip, video=True)
    r = client_for(owner).post(
        f"/api/v1/content/posts/{post.pk}/media",
        {"file": upload_file("clip.mp4", clip.read_bytes())},
        format="multipart",
    )
    assert r.status_code == 201, r.content
    video = Media.objects.get(pk=r.json()["id"])
    _run(broker, worker, "process_video_media", video.pk)
    video.refresh_from_db()
    assert video.processing_status == ProcessingStatus.READY, video.processing_error
    Post.objects.filter(pk=post.pk).update(status="published", published_at=timezone.now())
    url = urlsplit(client_for(None).get(f"/api/v1/content/media/{video.pk}").json()["variants"]["hls"]["url"])
    base = url.path.rsplit("/", 1)[0]
    before = client_for(None).get(url.path)
    etag_before = before["ETag"]
    assert etag_before == f'"{video.variants["hls"]["sha256"]}"' == f'"{_sha(_body(before))}"'
    assert b"TYPE=SUBTITLES" not in _body(before)

    def served_as_recorded() -> bytes:
        """The master and subs files are served with the sha256 recorded on the row, which is the
        sha256 of the bytes served; a client holding an older ETag gets the new bytes (200)."""
        video.refresh_from_db()
        hls = video.variants["hls"]
        body = _body(client_for(None).get(url.path))
        assert '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs"' in body.decode()
        r = client_for(None).get(url.path, HTTP_IF_NONE_MATCH=etag_before)
        assert r.status_code == 200 and _body(r) == body
        assert r["ETag"] == f'"{_sha(body)}"' == f'"{hls["sha256"]}"' and hls["size_bytes"] == len(body)
        assert client_for(None).get(url.path, HTTP_IF_NONE_MATCH=r["ETag"]).status_code == 304
        for name in ("subs/en.vtt", "subs/en.m3u8"):
            sub = client_for(None).get(f"{base}/{name}")
            data = _body(sub)
            assert sub.status_code == 200 and sub["ETag"] == f'"{_sha(data)}"', name
            assert hls["files"][name] == {"size_bytes": len(data), "sha256": _sha(data)}, name
        return body

    transcript = Media.objects.get(parent=video, kind="transcript")
    _run(broker, worker, "process_transcript_media", transcript.pk)
    transcript.refresh_from_db()
    assert transcript.processing_status == ProcessingStatus.READY, transcript.processing_error
    first = served_as_recorded()
    vtt = _body(client_for(None).get(f"{base}/subs/en.vtt"))
    assert vtt == storage.open_read(transcript.variants["captions"]["key"]).read()

    # A new attempt rewrites the tree: the subtitles come back (a copy of the captions, no new transcript).
    Media.objects.filter(pk=video.pk).update(processing_status="pending", attempt_token=None)
    storage.delete(f"{storage.media_prefix(owner.pk, video.pk)}hls/subs/en.vtt")  # the new tree has none
    _run(broker, worker, "process_video_media", video.pk)
    video.refresh_from_db()
    assert video.processing_status == ProcessingStatus.READY, video.processing_error
    assert Media.objects.filter(parent=video, kind="transcript").count() == 1
    assert not Media.objects.filter(parent=video, kind="transcript", processing_status="pending").exists()
    assert served_as_recorded() == first
    assert _body(client_for(None).get(f"{base}/subs/en.vtt")) == vtt


def _ready_transcript(post, *, cues, kind="audio"):
    parent = Media.objects.create(
        post=post,
        owner=post.author,
        kind=kind,
        processing_status="ready",
        original_key="k",
        mime_type="audio/mp4" if kind == "audio" else "video/mp4",
    )
    transcript = Media.objects.create(
        post=post,
        owner=post.author,
        parent=parent,
        kind="transcript",
        is_primary=False,
        processing_status="ready",
        mime_type="text/plain",
        original_key="t",
        metadata={"speech": True, "language": "en", "segments": [list(c) for c in cues]},
    )
    key = storage.media_key(post.author.pk, transcript.pk, "captions", ".vtt")
    segments = [captions.Segment(*c) for c in cues]
    storage.save(key, io.BytesIO(captions.render_webvtt(segments).encode()), "text/vtt")
    transcript.variants = {"captions": {"key": key, "mime_type": "text/vtt"}}
    transcript.save(update_fields=["variants"])
    return parent, transcript


CUES = [(0.5, 2.0, "the wether is sonny", 0.4), (3.0, 5.5, "we are going to the park", 0.7)]


def _published_video_with_hls(user):
    """A published video post with a ready transcript and a one-rung HLS tree (its master recorded)."""
    post = PostFactory(author=user, type="video", body="", published=True)
    video, transcript = _ready_transcript(post, cues=CUES, kind="video")
    master = b"#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=320x240\n360p.m3u8\n"
    key = storage.media_key(user.pk, video.pk, "hls/master", ".m3u8")
    storage.save(key, io.BytesIO(master), "application/vnd.apple.mpegurl")
    video.variants = {"hls": {"key": key, "sha256": _sha(master), "size_bytes": len(master), "files": {}}}
    video.save(update_fields=["variants"])
    return post, video, transcript, key, master


@pytest.mark.django_db
def test_refreshed_subtitles_are_recorded_with_the_master_they_rewrite(user):
    """The captions changed (an owner's correction stores them under new keys): putting them into the
    video's HLS tree again rewrites subs/en.vtt and the master in place, and records their new sha256s,
    so a client holding the old ETag gets the new bytes and the new ETag."""
    post, video, transcript, key, master = _published_video_with_hls(user)
    assert processing.refresh_hls_subtitles(transcript_id=video.pk) is None  # not a transcript
    url = urlsplit(client_for(None).get(f"/api/v1/content/media/{video.pk}").json()["variants"]["hls"]["url"])
    base = url.path.rsplit("/", 1)[0]
    master_etag, vtt_etag = f'"{_sha(master)}"', '"none yet"'
    for edit, text in enumerate(("the weather is sunny", "the weather is sunny today")):
        vtt = captions.render_webvtt([captions.Segment(0.5, 2.0, text, 1.0)], language="en").encode()
        vtt_key = storage.media_key(user.pk, transcript.pk, f"captions-{edit}", ".vtt")
        storage.save(vtt_key, io.BytesIO(vtt), "text/vtt")
        transcript.variants = {"captions": {"key": vtt_key, "mime_type": "text/vtt", "language": "en"}}
        transcript.save(update_fields=["variants"])
        written = processing.refresh_hls_subtitles(transcript_id=transcript.pk)
        assert written["vtt_key"] == key.replace("master.m3u8", "subs/en.vtt")
        video.refresh_from_db()
        hls = video.variants["hls"]
        assert hls["files"]["subs/en.vtt"] == {"size_bytes": len(vtt), "sha256": _sha(vtt)}
        r = client_for(None).get(url.path, HTTP_IF_NONE_MATCH=master_etag)
        if edit == 0:  # the master gained the rendition: new bytes, new ETag
            body = _body(r)
            assert r.status_code == 200 and b"TYPE=SUBTITLES" in body
            master_etag = r["ETag"]
            assert master_etag == f'"{_sha(body)}"' == f'"{hls["sha256"]}"'
        else:  # it already names it: the same bytes, still fresh
            assert r.status_code == 304 and r["ETag"] == master_etag == f'"{hls["sha256"]}"'
        sub = client_for(None).get(f"{base}/subs/en.vtt", HTTP_IF_NONE_MATCH=vtt_etag)
        assert sub.status_code == 200 and _body(sub) == vtt and sub["ETag"] == f'"{_sha(vtt)}"'
        vtt_etag = sub["ETag"]
        assert client_for(None).get(f"{base}/subs/en.vtt", HTTP_IF_NONE_MATCH=vtt_etag).status_code == 304


@pytest.mark.django_db
def test_the_hls_subtitles_follow_a_transcript_edit_only_once_it_is_cleared(
    user, platform, django_capture_on_commit_callbacks
):
    """The HLS tree's copy of the captions (subs/en.vtt) is what hls.js players show: an applied edit
    rewrites it, a held one leaves the cleared text there until the AI clears it. Playlists and the
    subtitles are served ``no-cache`` (rewritten in place), segments stay ``immutable``."""
    from media.services import transcript_edit_cleared

    platform(moderation_mode="reactive_only", trust_min_account_age_days=0, trust_min_approved_posts=0)
    post, video, transcript, key, master = _published_video_with_hls(user)
    Media.objects.filter(pk=transcript.pk).update(
        variants={"captions": {**transcript.variants["captions"], "language": "en"}}
    )
    processing.refresh_hls_subtitles(transcript_id=transcript.pk)
    url = urlsplit(client_for(None).get(f"/api/v1/content/media/{video.pk}").json()["variants"]["hls"]["url"])
    base = url.path.rsplit("/", 1)[0]

    def tree_subtitles() -> str:
        r = client_for(None).get(f"{base}/subs/en.vtt")
        assert r.status_code == 200 and r["Cache-Control"] == "public, no-cache"
        return _body(r).decode()

    assert client_for(None).get(url.path)["Cache-Control"] == "public, no-cache"
    assert "the wether is sonny" in tree_subtitles()
    edit_url = f"/api/v1/content/media/{video.pk}/transcript"
    with django_capture_on_commit_callbacks(execute=True):
        r = client_for(user).patch(edit_url, {"text": "The weather is sunny.\nWe walk."}, format="json")
    assert r.status_code == 200
    assert "The weather is sunny." in tree_subtitles() and "sonny" not in tree_subtitles()

    platform(moderation_mode="ai_prescreen")
    with django_capture_on_commit_callbacks(execute=True):
        r = client_for(user).patch(edit_url, {"text": "Held line one.\nHeld line two."}, format="json")
    assert r.status_code == 202
    assert "Held line one." not in tree_subtitles() and "The weather is sunny." in tree_subtitles()
    transcript.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        assert transcript_edit_cleared(
            media_id=transcript.pk, edit=transcript.metadata["pending_edit"]["edit"]
        )
    assert "Held line one." in tree_subtitles()


@pytest.mark.django_db
def test_owner_corrects_the_transcript_and_keeps_the_timings(
    user, other_user, platform, django_capture_on_commit_callbacks
):
    """An author whose posts are not prescreened (trusted, ``reactive_only``): the edit is public at
    once (the prescreened case is ``test_an_edited_transcript_of_a_published_post_waits_…``)."""
    platform(moderation_mode="reactive_only", trust_min_account_age_days=0, trust_min_approved_posts=0)
    post = PostFactory(author=user, type="audio", body="", published=True)
    parent, transcript = _ready_transcript(post, cues=CUES)
    old_key = transcript.variants["captions"]["key"]
    url = f"/api/v1/content/media/{parent.pk}/transcript"
    with django_capture_on_commit_callbacks(execute=True):
        r = client_for(user).patch(
            url, {"text": "The weather is sunny.\nWe are going to the park."}, format="json"
        )
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["id"] == str(transcript.pk) and body["media_id"] == str(parent.pk)
    assert [(c["start"], c["end"], c["text"]) for c in body["cues"]] == [
        (0.5, 2.0, "The weather is sunny."),
        (3.0, 5.5, "We are going to the park."),
    ]
    transcript.refresh_from_db()
    assert transcript.metadata["edits"] == 1 and transcript.variants["captions"]["key"] != old_key
    assert not storage.exists(old_key)  # the old captions are gone (their public URL was immutable)
    vtt = client_for(None).get(urlsplit(body["captions"]).path)
    assert vtt.status_code == 200 and "The weather is sunny." in _body(vtt).decode()
    assert client_for(None).get(url).json()["text"] == "The weather is sunny.\nWe are going to the park."
    # Others cannot edit it (their own published post's transcript is not theirs to change).
    r = client_for(other_user).patch(url, {"text": "mine now"}, format="json")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


@pytest.mark.django_db
def test_bad_transcript_edits_are_4xx(user):
    post = PostFactory(author=user, type="audio", body="")
    parent, transcript = _ready_transcript(post, cues=CUES)
    url = f"/api/v1/content/media/{transcript.pk}/transcript"
    r = client_for(user).patch(url, {"text": "   "}, format="json")
    assert r.status_code == 400 and r.json()["code"] == "invalid"
    r = client_for(user).patch(url, {"text": "x" * 20_001}, format="json")
    assert r.status_code == 400
    Media.objects.filter(pk=transcript.pk).update(processing_status="processing")
    r = client_for(user).patch(url, {"text": "hello"}, format="json")
    assert r.status_code == 409 and r.json()["code"] == "transcript_not_ready"
    image = Media.objects.create(
        post=post, owner=user, kind="image", original_key="i", mime_type="image/jpeg"
    )
    r = client_for(user).get(f"/api/v1/content/media/{image.pk}/transcript")
    assert r.status_code == 404 and r.json()["code"] == "transcript_not_found"
    Post.objects.filter(pk=post.pk).update(status="quarantined")
    Media.objects.filter(pk=transcript.pk).update(processing_status="ready")
    r = client_for(user).patch(url, {"text": "hello"}, format="json")
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"


def _public_captions(post) -> str:
    """The captions text the public gets for the post's audio (media JSON -> signed WebVTT URL)."""
    body = client_for(None).get(f"/api/v1/content/posts/{post.pk}")
    if body.status_code != 200:
        return f"post {body.status_code}"
    audio = next(m for m in body.json()["media"] if m["kind"] == "audio")
    return _body(client_for(None).get(urlsplit(audio["captions"]).path)).decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("The weather is sunny.\nWe are going to the park.", "published"),
        ("The weather is sunny.\nYou are so dumb and stupid.", "held"),
    ],
)
def test_an_edited_transcript_of_a_published_post_waits_for_the_prescreen(
    broker, worker, settings, platform, text, status
):
    """Nothing public before it is cleared: the edit is held (202, the owner sees it as
    ``pending_edit``) while everyone else keeps the cleared captions; a clean edit replaces them once
    scored, an abusive one holds the post and stays unpublished until a moderator approves it."""
    from moderation.services import post_approve
    from tests.moderation.test_admin import make_moderator

    settings.AI_PROVIDER = "local"
    platform(moderation_mode="ai_prescreen")
    owner = UserFactory()
    post = PostFactory(author=owner, type="audio", body="", published=True)
    parent, transcript = _ready_transcript(post, cues=CUES)
    url = f"/api/v1/content/media/{parent.pk}/transcript"
    old_text = "the wether is sonny\nwe are going to the park"
    r = client_for(owner).patch(url, {"text": text}, format="json")
    assert r.status_code == 202, r.content
    assert r.json()["pending_edit"]["text"] == text and r.json()["text"] == old_text

    broker.join("moderation", fail_fast=False)
    worker.join()
    post.refresh_from_db()
    transcript.refresh_from_db()
    review = AiReview.objects.get(post=post)
    assert review.raw["rescore"] == "transcript_edit" and review.raw["transcript_cues"]
    if status == "published":
        assert post.status == "published" and review.decision == "publish"
        assert "pending_edit" not in transcript.metadata and transcript.metadata["edits"] == 1
        assert post.edited_at is not None  # shown as edited, as any edit after publish
        assert client_for(None).get(url).json()["text"] == text
        assert "The weather is sunny." in _public_captions(post)
        return
    assert post.status in ("pending_review", "quarantined") and review.decision in ("review", "quarantine")
    assert review.scores["profanity"] >= 0.3
    assert transcript.metadata["pending_edit"]["edit"] == 1  # still held, never applied
    assert [c[2] for c in transcript.metadata["segments"]] == [c[2] for c in CUES]
    assert client_for(None).get(url).status_code == 404
    # The review page shows the held text with the abusive cue flagged; approving publishes it.
    from django.urls import reverse

    from tests.moderation.test_admin import login

    moderator = make_moderator()
    html = (
        login(moderator).get(reverse("admin:moderation_reviewqueue_change", args=[post.pk])).content.decode()
    )
    assert "edit, not yet public: approving the post publishes it" in html
    assert "stupid" in html.split('class="pf-cue pf-flagged"')[1].split("</li>")[0]
    post_approve(post_id=post.pk, moderator=moderator, reason="Rude but allowed")
    transcript.refresh_from_db()
    assert "pending_edit" not in transcript.metadata
    assert "You are so dumb and stupid." in _public_captions(post)


@pytest.mark.django_db
def test_transcript_edits_by_status_under_prescreen(user, platform, django_capture_on_commit_callbacks):
    """Drafts change at once (the prescreen at publish reads them); posts being reviewed or scheduled
    take no edit (409); a newer edit replaces the held one, whose files are deleted."""
    platform(moderation_mode="ai_prescreen")
    post = PostFactory(author=user, type="audio", body="")
    parent, transcript = _ready_transcript(post, cues=CUES)
    url = f"/api/v1/content/media/{parent.pk}/transcript"
    r = client_for(user).patch(url, {"text": "one\ntwo"}, format="json")
    assert r.status_code == 200 and r.json()["text"] == "one\ntwo" and r.json()["pending_edit"] is None
    for status in ("pending_review", "scheduled"):
        Post.objects.filter(pk=post.pk).update(status=status)
        r = client_for(user).patch(url, {"text": "three\nfour"}, format="json")
        assert r.status_code == 409 and r.json()["code"] == "invalid_transition", r.content
        assert "once it is published" in r.json()["detail"]
    Post.objects.filter(pk=post.pk).update(status="published")
    with django_capture_on_commit_callbacks(execute=True):
        assert client_for(user).patch(url, {"text": "five\nsix"}, format="json").status_code == 202
    # Until the AI has scored it (no worker runs here), every read path gives the cleared text.
    assert client_for(None).get(url).json()["text"] == "one\ntwo"
    assert client_for(None).get(url).json()["pending_edit"] is None
    assert "one" in _public_captions(post) and "five" not in _public_captions(post)
    assert client_for(user).get(url).json()["pending_edit"]["text"] == "five\nsix"
    admin_view = client_for(user).get(f"/api/v1/content/media/{parent.pk}").json()
    assert "five" not in _body(client_for(None).get(urlsplit(admin_view["captions"]).path)).decode()
    transcript.refresh_from_db()
    first = transcript.metadata["pending_edit"]
    with django_capture_on_commit_callbacks(execute=True):
        assert client_for(user).patch(url, {"text": "seven\neight"}, format="json").status_code == 202
    transcript.refresh_from_db()
    second = transcript.metadata["pending_edit"]
    assert second["edit"] == first["edit"] + 1 and [c[2] for c in second["segments"]] == ["seven", "eight"]
    assert not any(storage.exists(v["key"]) for v in first["variants"].values())
    assert all(storage.exists(v["key"]) for v in second["variants"].values())
    assert [c[2] for c in transcript.metadata["segments"]] == ["one", "two"]  # the public text


@pytest.mark.django_db
def test_a_finished_transcript_sends_the_review_of_a_pending_edit_at_once(
    broker, stub_ai, platform, django_capture_on_commit_callbacks
):
    """An audio added to a published post opens a revision whose prescreen waits for the audio's
    transcript: when that transcript finishes, the review is queued at once (not at the next poll),
    and it clears the revision while the public kept the previous one."""
    from content import services as content_services
    from moderation.review import review_post_revision
    from tests.conftest import queued

    platform(moderation_mode="ai_prescreen")
    owner = UserFactory()
    post = PostFactory(author=owner, type="audio", body="", published=True)
    first, _ = _ready_transcript(post, cues=CUES)
    added, transcript = _ready_transcript(post, cues=[(0.5, 2.0, "nice garden", 0.9)])
    Media.objects.filter(pk=first.pk).update(is_primary=True)
    Media.objects.filter(pk=added.pk).update(is_primary=False)
    Media.objects.filter(pk=transcript.pk).update(processing_status="processing")
    with django_capture_on_commit_callbacks(execute=False):  # its first review_post is lost
        revision = content_services.post_edit(post_id=post.pk, actor=owner, attach_media_ids=[added.pk])
    broker.flush_all()
    with django_capture_on_commit_callbacks(execute=True):  # a published post without an edit: nothing
        content_services.post_transcript_settled(post_id=PostFactory(author=owner, published=True).pk)
    assert queued(broker, "moderation") == []

    Media.objects.filter(pk=transcript.pk).update(processing_status="ready")
    transcript.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        processing._settle_on_commit(transcript)
    assert [(m.actor_name, m.args) for m in queued(broker, "moderation")] == [
        ("review_post", (str(post.pk), revision.number))
    ]
    with django_capture_on_commit_callbacks(execute=True):
        review_post_revision(post_id=str(post.pk), revision=revision.number, max_retries=0)
    post.refresh_from_db()
    revision.refresh_from_db()
    assert post.status == "published" and post.pending_revision is None
    assert revision.status == "cleared" and post.public_revision_id == revision.pk


@pytest.mark.django_db
def test_the_sweep_requeues_a_lost_transcript_on_the_speech_queue(broker, django_capture_on_commit_callbacks):
    from tests.conftest import queued

    post = PostFactory(type="audio", body="", published=True)
    parent, transcript = _ready_transcript(post, cues=CUES)
    Media.objects.filter(pk=transcript.pk).update(processing_status="pending")
    from media.sweep import sweep_pending_media

    with django_capture_on_commit_callbacks(execute=True):
        report = sweep_pending_media(statuses=["pending"], pending_grace_minutes=0)
    assert [(r.kind, r.action) for r in report.rows] == [("transcript", "queued")]
    assert [(m.actor_name, m.args) for m in queued(broker, "media.speech")] == [
        ("process_transcript_media", (str(transcript.pk),))
    ]


@pytest.mark.django_db
def test_a_verdict_applies_only_the_held_edit_it_scored(user, platform, django_capture_on_commit_callbacks):
    """The creator edits the transcript again while the AI is scoring the post: the verdict carries
    the held edit numbers it scored, and a newer edit stays held (its own re-score decides)."""
    from media.services import transcript_edits_approved

    platform(moderation_mode="ai_prescreen")
    post = PostFactory(author=user, type="audio", body="", published=True)
    parent, transcript = _ready_transcript(post, cues=CUES)
    url = f"/api/v1/content/media/{parent.pk}/transcript"
    with django_capture_on_commit_callbacks(execute=True):
        assert client_for(user).patch(url, {"text": "one\ntwo"}, format="json").status_code == 202
    transcript.refresh_from_db()
    scored = {str(transcript.pk): transcript.metadata["pending_edit"]["edit"]}
    with django_capture_on_commit_callbacks(execute=True):
        assert client_for(user).patch(url, {"text": "three\nfour"}, format="json").status_code == 202
    assert transcript_edits_approved(post_id=post.pk, edits=scored) == []
    transcript.refresh_from_db()
    assert [c[2] for c in transcript.metadata["pending_edit"]["segments"]] == ["three", "four"]
    assert [c[2] for c in transcript.metadata["segments"]] == [c[2] for c in CUES]
    newest = {str(transcript.pk): transcript.metadata["pending_edit"]["edit"]}
    with django_capture_on_commit_callbacks(execute=True):
        assert transcript_edits_approved(post_id=post.pk, edits=newest) == [str(transcript.pk)]
    transcript.refresh_from_db()
    assert [c[2] for c in transcript.metadata["segments"]] == ["three", "four"]
