"""Transcripts and captions (issue 17): synthetic speech from Debian's espeak-ng, transcribed offline
by PocketSphinx, through the processor and end to end through the real worker and the prescreen."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from content.models import Post
from media import speech
from media.models import Media, ProcessingStatus, ProcessorRun
from media.processors.base import ProcessingError, StepLog
from media.processors.speech import SpeechProcessor
from media.speech import Segment, SpeechUnavailable, Word, captions
from moderation.models import AiReview
from tests.conftest import client_for
from tests.factories import PostFactory, UserFactory
from tests.media.helpers import upload_file
from tests.media.speech_audio import ABUSIVE, CLEAN, have_espeak, speech_file, word_error_rate

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and ffmpeg are needed (make ffmpeg)")
QUEUES = ("media.audio", "media.video", "media.speech", "moderation")


# --- captions: cues, WebVTT, edited text ---------------------------------------------------------------


def test_words_group_into_cues_at_pauses_and_length():
    words = [Word(0.0, 0.4, "hello", 0.9), Word(0.5, 0.9, "there", 0.7), Word(2.0, 2.3, "again", 0.5)]
    words += [Word(2.4 + i * 0.5, 2.8 + i * 0.5, f"w{i}", 1.0) for i in range(20)]
    cues = captions.cues_from_words(words)
    assert [c.text for c in cues[:2]] == ["hello there", "again w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"]
    assert cues[0].start == 0.0 and cues[0].end == 0.9 and cues[0].confidence == 0.8
    assert all(c.end - c.start <= captions.MAX_CUE_SECONDS for c in cues)
    assert " ".join(c.text for c in cues).split() == [w.text for w in words]


def test_webvtt_round_trip_and_refusals():
    cues = [Segment(0.5, 2.25, "first --> line", 0.8), Segment(3661.0, 3662.5, "an <b>hour</b> in", 0.5)]
    text = captions.render_webvtt(cues, language="en")
    assert text.startswith("WEBVTT\n") and "01:01:01.000 --> 01:01:02.500" in text
    parsed = captions.parse_webvtt(text)
    assert [(c.start, c.end) for c in parsed] == [(0.5, 2.25), (3661.0, 3662.5)]
    assert "-->" not in parsed[0].text and "<" not in parsed[1].text
    with pytest.raises(captions.CaptionsError):
        captions.parse_webvtt("not vtt")
    with pytest.raises(captions.CaptionsError):
        captions.parse_webvtt("WEBVTT\n\n00:00:02.000 --> 00:00:01.000\nbackwards\n")


def test_edited_text_keeps_the_cue_timings():
    cues = [Segment(1.0, 2.0, "the wether", 0.4), Segment(3.0, 5.0, "is sonny", 0.3)]
    same = captions.retime(cues, "The weather\nis sunny\n")
    assert [(c.start, c.end, c.text, c.confidence) for c in same] == [
        (1.0, 2.0, "The weather", 1.0),
        (3.0, 5.0, "is sunny", 1.0),
    ]
    spread = captions.retime(cues, "one two three four five six")  # one line for two cues
    assert [c.text for c in spread] == ["one two", "three four five six"]  # 1 s and 2 s of cue time
    with pytest.raises(captions.CaptionsError):
        captions.retime([], "text")


# --- providers -------------------------------------------------------------------------------------------


def test_provider_settings(settings):
    settings.SPEECH_PROVIDER = "off"
    assert not speech.enabled()
    with pytest.raises(SpeechUnavailable):
        speech.get_speech_provider()
    settings.SPEECH_PROVIDER = "bogus"
    with pytest.raises(ImproperlyConfigured, match="pocketsphinx"):
        speech.provider_name()


def test_optional_provider_needs_model_files_and_never_downloads(settings, tmp_path):
    from media.speech.whisper import FasterWhisperProvider

    with pytest.raises(SpeechUnavailable, match="SPEECH_MODEL_PATH"):
        FasterWhisperProvider(model_path="")
    with pytest.raises(SpeechUnavailable, match="no model.bin"):
        FasterWhisperProvider(model_path=str(tmp_path))


def test_default_provider_ships_its_english_model():
    import pocketsphinx

    model = Path(pocketsphinx.get_model_path())
    assert (model / "en-us" / "en-us" / "mdef").is_file() and (model / "en-us" / "en-us.lm.bin").is_file()
    with pytest.raises(speech.SpeechError, match="English"):
        speech.get_speech_provider("pocketsphinx").transcribe(__file__, language="fr")


# --- the processor ------------------------------------------------------------------------------------------


@needs_espeak
def test_transcript_text_and_cue_timings(tmp_path):
    sentences = [CLEAN[0], ABUSIVE[0], CLEAN[1]]
    spoken = speech_file(sentences, tmp_path / "note.m4a", gap=1.2)
    steps = StepLog()
    result = SpeechProcessor().process(source=tmp_path / "note.m4a", workdir=tmp_path / "out", steps=steps)
    assert result.metadata["speech"] is True and result.metadata["language"] == "en"
    by_name = {v.name: v for v in result.variants}
    assert by_name["captions"].mime_type == "text/vtt" and by_name["text"].mime_type == "text/plain"
    cues = captions.parse_webvtt(by_name["captions"].path.read_text())
    assert len(cues) >= len(sentences)
    for cue in cues:  # every cue lies within ±1 s of a sentence that was said
        assert any(s.start - 1 <= cue.start and cue.end <= s.end + 1 for s in spoken), (cue, spoken)
    for s in spoken:  # and every sentence was heard: a cue starts within 1 s of it
        assert any(abs(cue.start - s.start) <= 1 for cue in cues), (s, cues)
    heard = " ".join(c.text for c in cues)
    assert word_error_rate(" ".join(sentences), heard) <= 0.4, heard
    assert "stupid" in heard
    assert by_name["text"].path.read_text().splitlines() == [c.text for c in cues]
    transcribe = next(s for s in steps.as_list() if s["name"] == "transcribe")
    assert transcribe["output"]["realtime_factor"] > 0 and transcribe["output"]["cues"] == len(cues)


@needs_espeak
def test_no_audio_track_and_no_speech_are_skipped_with_a_reason(tmp_path):
    silent_video = tmp_path / "silent.mp4"
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=s=160x120:r=10:d=2"]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(silent_video)],
        check=True,
    )
    result = SpeechProcessor().process(source=silent_video, workdir=tmp_path / "a", steps=StepLog())
    assert result.metadata == {"speech": False, "skipped": "no audio track"} and not result.variants
    hush = tmp_path / "hush.m4a"
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono", "-t", "3"]
        + [str(hush)],
        check=True,
    )
    result = SpeechProcessor().process(source=hush, workdir=tmp_path / "b", steps=StepLog())
    assert result.metadata["speech"] is False and result.metadata["skipped"] == "no speech detected"
    assert not result.variants


def test_not_a_media_file_is_refused(tmp_path):
    bogus = tmp_path / "x.m4a"
    bogus.write_bytes(b"not audio at all" * 100)
    with pytest.raises(ProcessingError):
        SpeechProcessor().process(source=bogus, workdir=tmp_path / "out", steps=StepLog())


# --- end to end: the worker, the transcript medium, the prescreen -----------------------------------------


def _drain(broker, worker):
    for _ in range(3):  # audio -> speech -> review (and the review's re-check) settle in turn
        for queue in QUEUES:
            broker.join(queue, fail_fast=False)
        worker.join()


def _voice_note_post(user, path, *, post_type="audio", title="My voice note"):
    post = PostFactory(author=user, type=post_type, title=title, body="")
    r = client_for(user).post(
        f"/api/v1/content/posts/{post.pk}/media",
        {"file": upload_file(path.name, path.read_bytes())},
        format="multipart",
    )
    assert r.status_code == 201, r.content
    r = client_for(user).post(f"/api/v1/content/posts/{post.pk}/publish")
    assert r.status_code in (200, 202), r.content
    return post


@pytest.fixture
def speech_e2e(settings, platform, monkeypatch):
    from moderation import review

    settings.AI_PROVIDER = "local"
    settings.SPEECH_PROVIDER = "pocketsphinx"
    monkeypatch.setattr(review, "TRANSCRIPT_POLL_SECONDS", 1)
    platform(moderation_mode="ai_prescreen")


@needs_espeak
@pytest.mark.django_db(transaction=True)
def test_abusive_voice_note_is_held_and_clean_one_published(broker, worker, speech_e2e, tmp_path):
    user = UserFactory()
    speech_file([CLEAN[0], ABUSIVE[0]], tmp_path / "rude.m4a")
    speech_file(CLEAN[:2], tmp_path / "kind.m4a")
    rude = _voice_note_post(user, tmp_path / "rude.m4a")
    kind = _voice_note_post(user, tmp_path / "kind.m4a")
    _drain(broker, worker)

    kind.refresh_from_db()
    rude.refresh_from_db()
    assert kind.status == "published", AiReview.objects.filter(post=kind).values()
    assert rude.status in ("pending_review", "quarantined") and rude.moderation_state in (
        "under_review",
        "flagged",
    )
    transcript = Media.objects.get(post=rude, kind="transcript")
    assert transcript.processing_status == ProcessingStatus.READY and transcript.parent.kind == "audio"
    assert transcript.is_primary is False and {"captions", "text"} <= set(transcript.variants)
    run = ProcessorRun.objects.get(media=transcript)
    assert run.queue == "media.speech" and run.actor == "process_transcript_media"
    review = AiReview.objects.get(post=rude, decision__in=("review", "quarantine"))
    assert review.scores["profanity"] >= 0.3
    flagged = [c for c in review.raw["transcript_cues"] if c["score"] >= 0.3]
    assert flagged and all(c["media_id"] == str(transcript.pk) for c in flagged)
    assert any("stupid" in transcript.metadata["segments"][c["index"]][2] for c in flagged)
    # The review queue shows the transcript with the abusive passage highlighted, seekable.
    from django.urls import reverse

    from tests.moderation.test_admin import login, make_moderator

    page = login(make_moderator()).get(reverse("admin:moderation_reviewqueue_change", args=[rude.pk]))
    html = page.content.decode()
    assert page.status_code == 200 and 'class="pf-transcript"' in html
    flagged_html = html.split('class="pf-cue pf-flagged"')[1].split("</li>")[0]
    assert "stupid" in flagged_html and 'class="pf-seek" data-start="' in flagged_html
    assert html.count("pf-cue pf-flagged") == len(flagged) and '<track kind="captions"' in html
    clean_review = AiReview.objects.get(post=kind, decision="publish")
    assert clean_review.raw["transcript_cues"] and clean_review.overall_score < 0.3

    # The media JSON of the published post gives everyone the captions; the held one only its owner.
    body = client_for(None).get(f"/api/v1/content/posts/{kind.pk}").json()
    audio = next(m for m in body["media"] if m["kind"] == "audio")
    assert audio["captions"] and audio["transcript_id"]
    r = client_for(None).get(audio["captions"])
    assert r.status_code == 200 and r["Content-Type"].startswith("text/vtt")
    vtt = b"".join(r.streaming_content) if r.streaming else r.content
    assert captions.parse_webvtt(vtt.decode())
    assert client_for(None).get(f"/api/v1/content/posts/{rude.pk}").status_code == 404
    own = client_for(user).get(f"/api/v1/content/media/{transcript.parent_id}").json()
    assert own["captions"] and own["transcript_id"] == str(transcript.pk)


@needs_espeak
@pytest.mark.django_db(transaction=True)
def test_editing_a_drafts_transcript_does_not_hide_what_was_said(broker, worker, speech_e2e, tmp_path):
    """A creator replaces an abusive voice note's transcript with harmless text before publishing:
    the prescreen still hears the speech (what the recogniser heard is kept and scored), and the
    review page shows it beside the creator's text with the abusive passage flagged."""
    from django.urls import reverse

    from tests.moderation.test_admin import login, make_moderator

    user = UserFactory()
    speech_file([CLEAN[0], ABUSIVE[0]], tmp_path / "rude.m4a")
    post = PostFactory(author=user, type="audio", title="My voice note", body="")
    r = client_for(user).post(
        f"/api/v1/content/posts/{post.pk}/media",
        {"file": upload_file("rude.m4a", (tmp_path / "rude.m4a").read_bytes())},
        format="multipart",
    )
    assert r.status_code == 201, r.content
    _drain(broker, worker)
    transcript = Media.objects.get(post=post, kind="transcript")
    lines = len(transcript.metadata["segments"])
    r = client_for(user).patch(
        f"/api/v1/content/media/{transcript.pk}/transcript",
        {"text": "\n".join(["What a lovely day."] * lines)},
        format="json",
    )
    assert r.status_code == 200, r.content
    assert client_for(user).post(f"/api/v1/content/posts/{post.pk}/publish").status_code in (200, 202)
    _drain(broker, worker)
    post.refresh_from_db()
    assert post.status in ("pending_review", "quarantined"), AiReview.objects.filter(post=post).values()
    html = login(make_moderator()).get(reverse("admin:moderation_reviewqueue_change", args=[post.pk]))
    heard = html.content.decode().split("What the recogniser heard")[1]
    assert "stupid" in heard.split('class="pf-cue pf-flagged"')[1].split("</li>")[0]


@needs_espeak
@pytest.mark.django_db(transaction=True)
def test_failed_transcript_sends_the_post_to_a_human(broker, worker, speech_e2e, settings, tmp_path):
    settings.SPEECH_PROVIDER = "faster-whisper"  # no SPEECH_MODEL_PATH: the transcript fails for good
    settings.SPEECH_MODEL_PATH = ""
    speech_file([CLEAN[0]], tmp_path / "kind.m4a")
    post = _voice_note_post(UserFactory(), tmp_path / "kind.m4a")
    _drain(broker, worker)
    post.refresh_from_db()
    transcript = Media.objects.get(post=post, kind="transcript")
    assert transcript.processing_status == ProcessingStatus.FAILED
    assert "SPEECH_MODEL_PATH" in transcript.processing_error
    assert post.status == "pending_review" and "transcript" in post.metadata["ai_review_error"]
    assert not AiReview.objects.filter(post=post, decision="publish").exists()


@pytest.mark.django_db(transaction=True)
def test_transcript_not_ready_in_time_sends_the_post_to_a_human(broker, worker, settings, platform, stub_ai):
    """The speech worker is down: the review waits ``SPEECH_PRESCREEN_WAIT_SECONDS``, then a human."""
    from moderation import review

    platform(moderation_mode="ai_prescreen")
    settings.SPEECH_PRESCREEN_WAIT_SECONDS = 2
    review.TRANSCRIPT_POLL_SECONDS, old = 1, review.TRANSCRIPT_POLL_SECONDS
    try:
        user = UserFactory()
        post = PostFactory(author=user, type="audio", body="", status="pending_review")
        Post.objects.filter(pk=post.pk).update(moderation_state="under_review", revision=1)
        parent = Media.objects.create(
            post=post,
            owner=user,
            kind="audio",
            processing_status="ready",
            original_key="k",
            mime_type="audio/aac",
        )
        Media.objects.create(
            post=post,
            owner=user,
            parent=parent,
            kind="transcript",
            is_primary=False,
            original_key="t",
            mime_type="text/plain",
            processing_status="pending",
        )
        from django.utils import timezone

        Post.objects.filter(pk=post.pk).update(submitted_at=timezone.now())
        broker.get_actor("review_post").send(str(post.pk), 1)
        _drain(broker, worker)
    finally:
        review.TRANSCRIPT_POLL_SECONDS = old
    post.refresh_from_db()
    assert post.status == "pending_review" and "not ready within 2 s" in post.metadata["ai_review_error"]
    assert not AiReview.objects.filter(post=post, decision__in=("publish", "review", "quarantine")).exists()


@pytest.mark.django_db(transaction=True)
def test_speech_off_makes_no_transcript(broker, worker, settings, platform, tmp_path):
    settings.SPEECH_PROVIDER = "off"
    platform(moderation_mode="reactive_only")
    note = tmp_path / "tone.m4a"
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=1", str(note)], check=True
    )
    post = _voice_note_post(UserFactory(), note)
    _drain(broker, worker)
    post.refresh_from_db()
    assert post.status == "published"
    assert not Media.objects.filter(post=post, kind="transcript").exists()
