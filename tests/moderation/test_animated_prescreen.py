"""Animated images are screened like video (issue 9, row 1): frames sampled across the whole animation,
by time and by scene change, every one scored, the highest wins.

The real detector cannot be shown explicit content in tests, so the "bad" frame is pure red and the
proof has three parts: the sampler extracts the red frame wherever and however briefly it shows; a
test provider that scores pictures by their red pixels, fed by the same ``visual_sources`` as the
local and Hive providers, holds the post through the real upload → processing → review path; and the
Hive provider uploads frames beyond the first.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from content import services as content_services
from content.models import Post
from moderation import providers
from moderation.models import AiReview
from moderation.providers.base import Provider, ProviderError, ProviderResult, ReviewInput
from moderation.providers.frames import is_animation, sample_animation_frames, visual_sources
from moderation.providers.hive import HiveProvider
from tests.conftest import client_for
from tests.factories import PostFactory, UserFactory
from tests.media.helpers import upload_file

from .fake_hive import FakeHive

WHITE = (255, 255, 255)
RED = (255, 0, 0)  # the "bad" picture
GREY = (128, 128, 128)
BLUE = (40, 60, 200)
SIZE = (96, 64)

FORMATS = {"gif": "GIF", "png": "PNG", "webp": "WEBP"}
if features.check("avif"):
    FORMATS["avif"] = "AVIF"

# (colour, milliseconds) per frame. Frame 1 is plain white for 100 ms in every case.
SCENARIOS = {
    "bad_after_first": [(WHITE, 100), (RED, 3000)],
    "bad_short_in_middle": [(WHITE, 100), (GREY, 2000), (RED, 20), (BLUE, 2000), (GREY, 1000)],
    "bad_short_last": [(WHITE, 100), (GREY, 2000), (BLUE, 2000), (RED, 20)],
}


def animation(path: Path, frames: list[tuple[tuple[int, int, int], int]]) -> Path:
    images = [Image.new("RGB", SIZE, colour) for colour, _ in frames]
    options = {"lossless": True} if path.suffix == ".webp" else {}
    images[0].save(
        path,
        FORMATS[path.suffix[1:]],
        save_all=True,
        append_images=images[1:],
        duration=[ms for _, ms in frames],
        loop=0,
        **options,
    )
    with Image.open(path) as check:  # the writer kept every frame (none merged)
        assert check.n_frames == len(frames)
    return path


def red_fraction(path: Path) -> float:
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    return float(red.mean())


def centre(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        return rgb.getpixel((rgb.width // 2, rgb.height // 2))


def close_to(colour, expected, tolerance=12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


# --- (a) the sampler --------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", list(FORMATS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sampler_extracts_the_bad_frame_wherever_it_is(tmp_path, ext, scenario):
    frames = SCENARIOS[scenario]
    path = animation(tmp_path / f"anim.{ext}", frames)
    out = tmp_path / "frames"
    out.mkdir()

    sample = sample_animation_frames(path, workdir=out)

    colours = [centre(frame.path) for frame in sample.frames]
    assert is_animation(path)
    assert sample.frame_count == len(frames)
    assert sample.duration_seconds == pytest.approx(sum(ms for _, ms in frames) / 1000)
    assert close_to(colours[0], WHITE) and sample.frames[0].index == 0
    red = [f for f, c in zip(sample.frames, colours, strict=True) if close_to(c, RED)]
    bad_index = [i for i, (colour, _) in enumerate(frames) if colour == RED][0]
    assert [f.index for f in red] == [bad_index]
    # Every distinct picture is looked at once, however short it is shown.
    assert sorted({f.index for f in sample.frames}) == [f.index for f in sample.frames]
    for colour, _ in frames:
        assert any(close_to(c, colour) for c in colours), colour


def test_sampler_is_bounded_and_still_finds_one_short_frame_among_999(tmp_path):
    """999 frames (a slow grey ramp, each frame close to the last) with one 20 ms red frame at 613:
    a handful of frames come out, in a few seconds, and the red one is among them."""
    images, durations = [], []
    for i in range(999):
        if i == 613:
            images.append(Image.new("RGB", (160, 120), RED))
            durations.append(20)
        else:
            level = 40 + i * 200 // 999
            frame = Image.new("RGB", (160, 120), (level, level, level))
            frame.putpixel((i % 160, i // 160), (0, 0, 0))  # a moving dot: no two frames alike
            images.append(frame)
            durations.append(40)
    path = tmp_path / "long.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    out = tmp_path / "frames"
    out.mkdir()

    started = time.monotonic()
    sample = sample_animation_frames(path, workdir=out, time_frames=8, scene_frames=16)
    elapsed = time.monotonic() - started

    assert sample.frame_count == 999
    assert elapsed < 10
    assert len(sample.frames) <= 8 + 16 + 1
    assert 613 in [f.index for f in sample.frames if close_to(centre(f.path), RED)]
    times = [f.time_seconds for f in sample.frames if f.reason == "time"]
    assert len(times) >= 4 and times[-1] > sample.duration_seconds / 2  # spread over the whole length


def test_sampler_refuses_too_much_decoding_before_it_starts(tmp_path):
    path = animation(tmp_path / "big.gif", [(WHITE, 100), (RED, 100), (GREY, 100)])
    out = tmp_path / "frames"
    out.mkdir()

    started = time.monotonic()
    with pytest.raises(ProviderError, match="too much to screen automatically") as caught:
        sample_animation_frames(path, workdir=out, max_decoded_pixels=SIZE[0] * SIZE[1] * 2)
    assert caught.value.retryable is False
    assert time.monotonic() - started < 1
    assert list(out.iterdir()) == []

    with pytest.raises(ProviderError, match="time budget") as caught:
        sample_animation_frames(path, workdir=out, timeout=0)
    assert caught.value.retryable is False


def test_stills_are_not_animations(tmp_path):
    still_gif = tmp_path / "still.gif"
    Image.new("RGB", SIZE, RED).save(still_gif)
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", SIZE, RED).save(jpeg)
    (tmp_path / "junk.gif").write_bytes(b"GIF89a nonsense")

    assert not is_animation(still_gif)
    assert not is_animation(jpeg)
    assert not is_animation(tmp_path / "junk.gif")
    found = visual_sources(ReviewInput(image_paths=[still_gif, jpeg]), tmp_path)
    assert found.pictures == [("image 1", still_gif), ("image 2", jpeg)]


# --- (b) through the real upload → processing → review path ------------------------------------------


class RedPixelProvider(Provider):
    """Scores each picture by its share of pure red pixels; sees exactly the frames the real providers
    see (``visual_sources``)."""

    name = "redpixels"

    def review(self, item: ReviewInput) -> ProviderResult:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            found = visual_sources(item, Path(tmp))
            scores = {source: red_fraction(path) for source, path in found.pictures}
        overall = max(scores.values(), default=0.0)
        return ProviderResult(
            provider=self.name,
            model="red",
            scores={"red": overall},
            overall=overall,
            raw={"pictures": sorted(scores), "frames": found.frames, "animations": found.animations},
        )


@pytest.fixture
def red_ai(settings, monkeypatch):
    monkeypatch.setitem(providers.PROVIDERS, "redpixels", RedPixelProvider)
    monkeypatch.setattr(providers, "_instances", {})
    settings.AI_PROVIDER = "redpixels"


def _post_with(path: Path, broker, worker, platform) -> Post:
    platform(moderation_mode="ai_prescreen", ai_review_threshold=0.3, ai_revoke_threshold=0.7)
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="")
    r = client_for(user).post(
        f"/api/v1/content/posts/{post.pk}/media",
        {"file": upload_file(path.name, path.read_bytes())},
        format="multipart",
    )
    assert r.status_code == 201, r.content
    broker.join("media.image", fail_fast=False)
    worker.join()
    content_services.post_publish(post_id=post.pk, actor=user)
    broker.join("moderation", fail_fast=False)
    worker.join()
    post.refresh_from_db()
    return post


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("ext", "scenario"),
    [(ext, "bad_after_first") for ext in FORMATS]
    + [("gif", "bad_short_in_middle"), ("webp", "bad_short_last")],
)
def test_prescreen_holds_an_animation_with_a_bad_frame(
    tmp_path, broker, worker, platform, red_ai, ext, scenario
):
    path = animation(tmp_path / f"anim.{ext}", SCENARIOS[scenario])

    post = _post_with(path, broker, worker, platform)

    media = post.media.get()
    assert media.processing_status == "ready" and media.metadata["animated"] is True
    assert "mp4" in media.variants  # what the public would have played
    assert post.status == "quarantined" and post.moderation_state == "flagged"
    review = AiReview.objects.get(post=post)
    assert review.overall_score >= 0.7
    assert review.raw["frames"]["image 1"] >= 2
    assert any(source.startswith("image 1 frame ") for source in review.raw["pictures"])


@pytest.mark.django_db(transaction=True)
def test_prescreen_publishes_a_harmless_animation(tmp_path, broker, worker, platform, red_ai):
    path = animation(tmp_path / "white.gif", [(WHITE, 100), ((245, 245, 245), 1500), (WHITE, 1500)])

    post = _post_with(path, broker, worker, platform)

    assert (post.status, post.moderation_state) == ("published", "clean")
    review = AiReview.objects.get(post=post)
    # The last frame is the first picture again: looked at once.
    assert review.overall_score == 0.0 and review.raw["frames"]["image 1"] == 2


@pytest.mark.django_db(transaction=True)
def test_animation_over_the_screening_budget_goes_to_a_human_without_retries(
    tmp_path, broker, worker, platform, red_ai, settings
):
    settings.AI_ANIMATION_MAX_DECODED_PIXELS = SIZE[0] * SIZE[1]  # one frame's worth
    path = animation(tmp_path / "anim.gif", SCENARIOS["bad_after_first"])

    post = _post_with(path, broker, worker, platform)

    assert post.status == "pending_review"
    reviews = list(AiReview.objects.filter(post=post))
    assert [(r.decision, r.raw["final"]) for r in reviews] == [("error", True)]
    assert "too much to screen automatically" in post.metadata["ai_review_error"]


# --- Hive sees the frames too ---------------------------------------------------------------------------


def _jpegs(body: bytes) -> list[Image.Image]:
    start = body.find(b"\xff\xd8")
    end = body.rfind(b"\xff\xd9")
    assert start >= 0 and end > start
    return [Image.open(io.BytesIO(body[start : end + 2])).convert("RGB")]


def test_hive_sends_frames_beyond_the_first_of_an_animation(settings, tmp_path):
    path = animation(tmp_path / "anim.gif", SCENARIOS["bad_short_in_middle"])
    with FakeHive() as hive:
        settings.HIVE_API_URL = hive.url
        settings.HIVE_API_KEY = "test-hive-key"
        settings.HIVE_BACKOFF_SECONDS = 0.01

        result = HiveProvider().review(ReviewInput(image_paths=[path]))

    sent = [_jpegs(request.body)[0] for request in hive.received]
    colours = [image.getpixel((image.width // 2, image.height // 2)) for image in sent]
    assert len(sent) == result.raw["frames"]["image 1"] >= 4
    assert close_to(colours[0], WHITE)
    assert sum(close_to(c, RED) for c in colours) == 1  # the 20 ms frame in the middle was uploaded
    assert any(source.startswith("image 1 frame 2 @2.1s") for source in result.raw["sources"])
    assert path.read_bytes() not in b"".join(
        request.body for request in hive.received
    )  # frames, not the file
