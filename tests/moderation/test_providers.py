"""AI providers (DESIGN.md §6): real models on generated media, Hive against a local fake server."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.exceptions import ImproperlyConfigured
from PIL import Image

from moderation.providers import get_provider
from moderation.providers.base import ProviderError, ReviewInput
from moderation.providers.combined import CombinedProvider
from moderation.providers.hive import HiveProvider
from moderation.providers.local import LocalProvider, models, sample_video_frames
from moderation.providers.stub import StubProvider

from .fake_hive import CLEAN_VISUAL, FakeHive, Reply, text_answer, visual_answer

PROFANE = "you are a fucking idiot, shit"
CLEAN = "A quiet morning walk by the lake, with coffee and the first light over the hills."


# --- generated media (never anything explicit) -------------------------------------------------------


def landscape(path: Path, size: tuple[int, int] = (640, 480), seed: int = 1) -> Path:
    """A photo-like landscape: sky gradient, hills, noisy grass."""
    width, height = size
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    sky = np.stack([90 + 100 * y, 140 + 80 * y, 230 - 30 * y], axis=-1) * np.ones((1, width, 1))
    ground = np.stack([40 + 30 * y, 110 + 40 * y, 30 + 10 * y], axis=-1) * np.ones((1, width, 1))
    horizon = 0.55 + 0.08 * np.sin(x * 9 + seed)
    image = np.where((y > horizon)[..., None], ground, sky)
    image += rng.normal(0, 12, image.shape)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def make_video(path: Path, *, seconds: int = 2, size: str = "320x240") -> Path:
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=25:duration={seconds}",
        ]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )
    return path


# --- local -------------------------------------------------------------------------------------------


def test_local_clean_image_scores_low_and_models_load_once(tmp_path):
    provider = LocalProvider()
    image = landscape(tmp_path / "lake.jpg")
    loaded = models()

    first = provider.review(ReviewInput(image_paths=[image]))
    started = time.perf_counter()
    second = provider.review(ReviewInput(image_paths=[image]))
    second_seconds = time.perf_counter() - started

    assert models() is loaded  # same detector and profanity model: loaded once per process
    assert second_seconds < 2.0
    for result in (first, second):
        assert result.provider == "local"
        assert result.model == "nudenet-320n+profanity-check"
        assert "nudenet 3.4.2" in result.version
        assert result.overall < 0.3
        assert set(result.scores) == {"nudity_explicit", "sexual", "profanity"}
        assert all(0.0 <= score <= 1.0 for score in result.scores.values())
        assert result.raw["images_scored"] == 1


def test_local_profane_text_scores_high(tmp_path):
    result = LocalProvider().review(ReviewInput(text=f"Sunset photos\n{PROFANE}"))

    assert result.scores["profanity"] > 0.7
    assert result.overall == result.scores["profanity"]
    assert result.labels[0].startswith("profanity: ")
    assert result.labels[0].endswith("(text)")


def test_local_profanity_is_not_diluted_by_a_long_clean_body():
    body = " ".join([CLEAN] * 30) + f" {PROFANE}."
    assert LocalProvider().review(ReviewInput(text=body)).scores["profanity"] > 0.7


@pytest.mark.parametrize("text", [CLEAN, "", "   \n "])
def test_local_clean_or_empty_text_scores_low(text):
    result = LocalProvider().review(ReviewInput(text=text))

    assert result.scores["profanity"] < 0.3
    assert result.overall < 0.3
    if not text.strip():
        assert result.overall == 0.0
        assert result.labels == []


def test_local_video_is_sampled_evenly_and_scores_low(tmp_path, settings):
    video = make_video(tmp_path / "clip.mp4")
    poster = landscape(tmp_path / "poster.jpg", seed=2)

    result = LocalProvider().review(ReviewInput(video_paths=[video], poster_paths=[poster], text=CLEAN))

    assert result.raw["frames"] == {"video 1": settings.AI_VIDEO_FRAMES}
    assert result.raw["images_scored"] == settings.AI_VIDEO_FRAMES + 1
    assert result.overall < 0.3


@pytest.mark.parametrize("method", ["fps", "seek"])
def test_frame_sampler_takes_the_midpoints_of_equal_slices(tmp_path, method):
    video = make_video(tmp_path / "clip.mp4", seconds=4)
    out = tmp_path / "frames"
    out.mkdir()

    frames = sample_video_frames(video, count=4, workdir=out, method=method)

    assert [frame.time_seconds for frame in frames] == [0.5, 1.5, 2.5, 3.5]
    for frame in frames:
        with Image.open(frame.path) as image:
            assert image.size == (320, 240)


def test_local_unreadable_image_fails_closed(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")

    with pytest.raises(ProviderError, match="broken.jpg"):
        LocalProvider().review(ReviewInput(image_paths=[broken]))
    with pytest.raises(ProviderError, match="missing.jpg"):
        LocalProvider().review(ReviewInput(image_paths=[tmp_path / "missing.jpg"]))


def test_local_unreadable_video_fails_closed(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated nonsense")

    with pytest.raises(ProviderError, match="broken.mp4"):
        LocalProvider().review(ReviewInput(video_paths=[broken]))


# --- hive (against a local fake server) ---------------------------------------------------------------

NSFW_ISH = visual_answer(
    {
        "general_nsfw": 0.91,
        "general_suggestive": 0.08,
        "general_not_nsfw_not_suggestive": 0.01,
        "yes_female_nudity": 0.88,
        "no_female_nudity": 0.12,
        "yes_female_underwear": 0.5,
        "very_bloody": 0.02,
        "gun_in_hand": 0.3,
        "no_gun": 0.7,
        "yes_some_future_class": 0.99,  # unknown classes are kept out
    }
)


@pytest.fixture
def hive(settings):
    with FakeHive() as server:
        settings.HIVE_API_URL = server.url
        settings.HIVE_API_KEY = "test-hive-key"
        settings.HIVE_TIMEOUT_SECONDS = 2.0
        settings.HIVE_BACKOFF_SECONDS = 0.01
        settings.HIVE_MAX_ATTEMPTS = 3
        yield server


def test_hive_parses_an_nsfw_answer_into_categories(hive, tmp_path):
    image = landscape(tmp_path / "photo.jpg")
    hive.queue(
        Reply(body=NSFW_ISH),
        Reply(
            body=text_answer(
                {"sexual": 2, "hate": 0, "violence": 0, "bullying": 3, "spam": 1}, profanity=["shit"]
            )
        ),
    )

    result = HiveProvider().review(ReviewInput(text=PROFANE, image_paths=[image]))

    assert result.provider == "hive"
    assert result.scores == {
        "nudity_explicit": 0.91,  # general_nsfw 0.91 × 1.0 beats yes_female_nudity 0.88
        "sexual": pytest.approx(0.6),  # text level 2 beats underwear 0.5 × 0.4 and suggestive 0.08 × 0.6
        "violence": pytest.approx(0.18),  # gun_in_hand 0.3 × 0.6
        "toxicity": 1.0,  # bullying level 3
        "profanity": 0.9,  # a word-list match
    }
    assert result.overall == 1.0
    assert result.labels[0] == "toxicity: bullying level 3 1.00 (text)"
    assert "nudity_explicit: general_nsfw 0.91 (image 1)" in result.labels
    assert "yes_some_future_class" not in str(result.raw)
    assert "hive_visual_moderation@1" in result.version

    visual, text = hive.received
    for request in (visual, text):
        assert request.headers["authorization"] == "token test-hive-key"
        assert request.path == "/api/v2/task/sync"
    assert b'name="media"; filename="photo.jpg"' in visual.body
    assert image.read_bytes() in visual.body
    assert b'name="text_data"' in text.body or b"text_data=" in text.body


def test_hive_uses_the_text_key_for_text_when_set(hive, settings):
    settings.HIVE_TEXT_API_KEY = "text-project-key"
    hive.queue(Reply(body=text_answer({"sexual": 0, "hate": 0, "violence": 0, "bullying": 0})))

    result = HiveProvider().review(ReviewInput(text=CLEAN))

    assert result.overall == 0.0
    assert hive.received[0].headers["authorization"] == "token text-project-key"


def test_hive_retries_429_honouring_retry_after(hive, tmp_path):
    image = landscape(tmp_path / "photo.jpg")
    hive.queue(
        Reply(status=429, body={"error": "rate limited"}, headers={"Retry-After": "0.3"}),
        Reply(body=NSFW_ISH),
    )

    result = HiveProvider().review(ReviewInput(image_paths=[image]))

    assert result.scores["nudity_explicit"] == 0.91
    assert result.raw["requests"] == 2
    first, second = hive.received
    assert 0.3 <= second.at - first.at < 2.0


def test_hive_gives_up_after_bounded_retries_on_5xx(hive, tmp_path):
    hive.default = Reply(status=503, body="upstream unavailable")

    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"after 3 attempts \(HTTP 503\)"):
        HiveProvider().review(ReviewInput(image_paths=[landscape(tmp_path / "photo.jpg")]))

    assert len(hive.received) == 3
    assert time.monotonic() - started < 2.0


def test_hive_does_not_retry_a_rejected_key(hive, tmp_path):
    hive.default = Reply(status=401, body={"message": "invalid token"})

    with pytest.raises(ProviderError, match="rejected the API key"):
        HiveProvider().review(ReviewInput(image_paths=[landscape(tmp_path / "photo.jpg")]))

    assert len(hive.received) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        {"status": []},
        {"status": [{"response": {"output": "nope"}}]},
        {
            "status": [
                {
                    "response": {
                        "output": [{"time": 0, "classes": [{"class": "general_nsfw", "score": "high"}]}]
                    }
                }
            ]
        },
        {"status": [{"status": {"code": "1", "message": "FAILED"}, "response": {"output": []}}]},
    ],
)
def test_hive_garbage_is_a_provider_error(hive, tmp_path, body):
    hive.default = Reply(body=body)

    with pytest.raises(ProviderError, match="garbage|could not classify"):
        HiveProvider().review(ReviewInput(image_paths=[landscape(tmp_path / "photo.jpg")]))


def test_hive_slow_server_times_out(hive, settings, tmp_path):
    settings.HIVE_TIMEOUT_SECONDS = 0.2
    settings.HIVE_MAX_ATTEMPTS = 2
    hive.default = Reply(body=CLEAN_VISUAL, delay=1.0)

    started = time.monotonic()
    with pytest.raises(ProviderError, match="timed out"):
        HiveProvider().review(ReviewInput(image_paths=[landscape(tmp_path / "photo.jpg")]))

    assert len(hive.received) == 2
    assert time.monotonic() - started < 1.5


def test_hive_total_budget_bounds_the_retries(hive, settings, tmp_path):
    settings.HIVE_TOTAL_BUDGET_SECONDS = 1.0
    hive.default = Reply(status=429, headers={"Retry-After": "30"}, body={})

    started = time.monotonic()
    with pytest.raises(ProviderError, match="time budget"):
        HiveProvider().review(ReviewInput(image_paths=[landscape(tmp_path / "photo.jpg")]))

    assert len(hive.received) == 1
    assert time.monotonic() - started < 1.0


def test_hive_without_a_key_fails_before_sending(hive, settings, tmp_path):
    settings.HIVE_API_KEY = None

    with pytest.raises(ProviderError, match="Hive API key is not configured"):
        HiveProvider().review(ReviewInput(text=CLEAN, image_paths=[landscape(tmp_path / "photo.jpg")]))

    assert hive.received == []


def test_hive_video_sends_the_sampled_frames(hive, settings, tmp_path):
    settings.AI_VIDEO_FRAMES = 3
    video = make_video(tmp_path / "clip.mp4")

    result = HiveProvider().review(ReviewInput(video_paths=[video]))

    assert len(hive.received) == 3
    assert all(b'name="media"; filename="frame_' in request.body for request in hive.received)
    assert set(result.raw["sources"]) == {"video 1 @0.333s", "video 1 @1s", "video 1 @1.667s"}
    assert result.overall < 0.3


# --- stub, combining, selection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("plain text", 0.0), ("looks bad [ai:0.85]", 0.85), ("[ai:1]", 1.0), ("[ai:slow:0.2] [ai:0.4]", 0.4)],
)
def test_stub_scores_from_markers(text, expected):
    started = time.monotonic()
    result = StubProvider().review(ReviewInput(text=text))

    assert result.overall == expected
    assert result.scores == {"stub": expected}
    assert result.provider == "stub"
    if "slow" in text:
        assert time.monotonic() - started >= 0.2


def test_stub_default_score_comes_from_settings(settings):
    settings.AI_STUB_SCORE = 0.5
    assert StubProvider().review(ReviewInput(text="hello")).overall == 0.5


@pytest.mark.parametrize(("marker", "match"), [("[ai:error]", "failed"), ("[ai:garbage]", "garbage")])
def test_stub_error_markers_raise(marker, match):
    with pytest.raises(ProviderError, match=match):
        StubProvider().review(ReviewInput(text=f"title {marker}"))


def test_combined_provider_keeps_the_highest_score():
    provider = get_provider("local, stub")

    result = provider.review(ReviewInput(text=f"{PROFANE} [ai:0.4]"))

    assert isinstance(provider, CombinedProvider)
    assert result.provider == "local+stub"
    assert result.scores["stub"] == 0.4
    assert result.scores["profanity"] > 0.7
    assert result.overall == result.scores["profanity"]
    assert result.labels[0].startswith("[local] profanity")
    assert "[stub] stub: 0.40" in result.labels
    assert set(result.raw) == {"local", "stub"}
    assert result.model == "nudenet-320n+profanity-check+stub"


def test_combined_provider_fails_closed_when_one_fails():
    with pytest.raises(ProviderError):
        get_provider("stub,local").review(ReviewInput(text="[ai:error]"))


def test_get_provider_reads_settings_and_caches_instances(settings):
    settings.AI_PROVIDER = "stub"
    assert isinstance(get_provider(), StubProvider)

    found = []
    threads = [threading.Thread(target=lambda: found.append(get_provider("hive"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(provider) for provider in found}) == 1
    assert get_provider("local") is get_provider("local")
    assert get_provider("local,stub").providers[0] is get_provider("local")


@pytest.mark.parametrize("name", ["rekognition", "local,nope", "", " , "])
def test_unknown_provider_is_a_configuration_error(name):
    with pytest.raises(ImproperlyConfigured, match="AI_PROVIDER"):
        get_provider(name)


@pytest.mark.parametrize("name", ["stub", "local,stub"])
def test_stub_is_refused_in_production(settings, name):
    settings.DEBUG = False
    settings.TESTING = False

    with pytest.raises(ImproperlyConfigured, match="stub AI provider is for tests only"):
        get_provider(name)

    assert isinstance(get_provider("local"), LocalProvider)


def test_hive_answer_without_any_known_class_fails_closed(hive, tmp_path):
    """An answer naming no class we know (a changed model) must not read as "clean"."""
    hive.default = Reply(body=visual_answer({"brand_new_class": 0.99, "another_one": 0.01}))
    with pytest.raises(ProviderError, match="no class we know"):
        HiveProvider().review(ReviewInput(image_paths=[landscape(tmp_path / "photo.jpg")]))


def test_local_animated_image_scores_every_sampled_frame(tmp_path):
    """An animated GIF is not one still: the detector runs on frames across the whole animation."""
    frames = [Image.open(landscape(tmp_path / f"f{seed}.jpg", (320, 240), seed=seed)) for seed in (1, 2, 3)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[100, 2000, 2000], loop=0)

    result = LocalProvider().review(ReviewInput(image_paths=[gif]))

    assert result.raw["frames"] == {"image 1": 3}
    assert result.raw["images_scored"] == 3
    assert result.raw["animations"]["image 1"]["frames_total"] == 3
    assert result.overall < 0.3
