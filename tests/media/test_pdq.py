"""PDQ perceptual hashes: stability, the packed matcher, the blocklist's cached index, the reject path
that stores hashes, and the worker blocking a re-encoded copy of a blocked picture end to end."""

import io
import subprocess

import numpy as np
import pytest
from PIL import Image

from content.models import Post
from media import pipeline
from media.models import Media, ProcessingStatus, ProcessorRun
from media.processors import pdq
from moderation import blocklist, services
from moderation.models import BlockedMedia
from tests.conftest import client_for
from tests.factories import MediaFactory, PostFactory, UserFactory
from tests.media.helpers import image_bytes, reencoded_copy, scene_image, upload_file


def _hash_bytes(data: bytes) -> str:
    return pdq.hash_image(Image.open(io.BytesIO(data))).hex


def _entry(hex_: str, quality: int = 100, source: str = "medium") -> dict:
    return {"hash": hex_, "quality": quality, "source": source}


def test_hex_is_metas_canonical_order():
    """pdqhash's bit k is bit k % 16 of word k // 16; Meta's hex prints word 15 first."""
    bits = np.zeros(256, dtype=np.int64)
    bits[0] = 1
    assert pdq._bits_to_hex(bits) == "0" * 63 + "1"
    bits[:] = 0
    bits[255] = 1
    assert pdq._bits_to_hex(bits) == "8" + "0" * 63


def test_hash_is_stable_across_reencode_resize_and_far_from_other_pictures():
    original = scene_image(11)
    h = pdq.hash_image(original)
    assert h.quality >= 80
    for copy in (
        image_bytes(original, quality=60),
        image_bytes(original.resize((512, 384))),
        image_bytes(original, "WEBP", quality=50),
        reencoded_copy(original, crop=0.0),
    ):
        assert pdq.hamming(h.hex, _hash_bytes(copy)) <= 16
    others = [pdq.hamming(h.hex, pdq.hash_image(scene_image(s, (320, 240))).hex) for s in range(100, 110)]
    assert min(others) > 64


def test_crop_hashes_catch_a_lightly_cropped_copy():
    original = scene_image(12, (1280, 960))
    stored = [x.hex for x in [pdq.hash_image(original), *pdq.crop_hashes(original, source="medium")]]
    assert len(stored) == 1 + len(pdq.CROPS)
    cropped = _hash_bytes(reencoded_copy(original, crop=0.05))
    assert pdq.hamming(stored[0], cropped) > 31  # the picture's own hash alone misses it
    assert pdq.PdqIndex(stored).nearest(cropped, 31) is not None


def test_packed_index_agrees_with_python_popcount_and_the_lookup_table(monkeypatch):
    rng = np.random.default_rng(3)
    hexes = [f"{int(x):064x}" for x in (int.from_bytes(rng.bytes(32), "big") for _ in range(500))]
    idx = pdq.PdqIndex(hexes, keys=[f"k{i}" for i in range(500)])
    query = hexes[123][:-1] + ("0" if hexes[123][-1] != "0" else "1")  # 1-4 bits away from #123
    expected = [pdq.hamming(query, h) for h in hexes]
    assert idx.distances(query).tolist() == expected
    words = idx.packed ^ pdq.pack([query])[0]
    assert (pdq._popcount_table(words).sum(axis=1) == np.array(expected)).all()
    monkeypatch.setattr(pdq, "_popcount", pdq._popcount_table)  # the numpy < 2 path
    assert idx.distances(query).tolist() == expected
    monkeypatch.undo()
    found = idx.nearest(query, 31)
    assert found.key == "k123" and found.distance == expected[123] <= 4
    assert idx.nearest(hexes[0], 0).key == "k0"
    assert pdq.PdqIndex([]).nearest(query, 31) is None
    with pytest.raises(ValueError):
        pdq.pack(["abc"])


@pytest.mark.django_db
def test_blocklist_index_is_cached_and_rebuilt_when_the_table_changes(django_assert_num_queries):
    blocklist.invalidate()
    a, b = pdq.hash_image(scene_image(21)).hex, pdq.hash_image(scene_image(22)).hex
    assert blocklist.match([_entry(a)]) is None
    row = BlockedMedia.objects.create(sha256="1" * 64, pdq_hashes=[a])
    found = blocklist.match([_entry(a)])
    assert found is not None and (found.blocked_id, found.distance) == (row.pk, 0)
    first = blocklist.index()
    with django_assert_num_queries(1):  # the signature only: the cached index is reused
        assert blocklist.index() is first
    # Rows written without signals (another process, bulk_create) are seen through the signature.
    BlockedMedia.objects.bulk_create([BlockedMedia(sha256="2" * 64, pdq_hashes=[b])])
    assert blocklist.index() is not first and len(blocklist.index()) == 2
    assert blocklist.match([_entry(b)]).blocked_id == BlockedMedia.objects.get(sha256="2" * 64).pk
    row.delete()
    assert blocklist.match([_entry(a)]) is None
    # Low-quality hashes (flat pictures) and crops of the new medium are never looked up.
    assert blocklist.match([_entry(b, quality=10)]) is None
    assert blocklist.match([_entry(b, source="medium~crop-c3")]) is None


@pytest.mark.django_db
def test_reject_stores_the_media_pdq_hashes_on_the_blocklist(staff):
    good, crop, flat = (pdq.hash_image(scene_image(s)).hex for s in (31, 32, 33))
    post = PostFactory(type="image", status="pending_review")
    media = MediaFactory(
        post=post,
        pdq_hashes=[_entry(good), _entry(crop, source="medium~crop-c3"), _entry(flat, quality=5)],
    )
    already = BlockedMedia.objects.create(sha256=MediaFactory(post=post).sha256)  # blocked before PDQ
    Media.objects.filter(sha256=already.sha256).update(pdq_hashes=[_entry(flat, quality=90)])
    services.post_reject(post_id=post.pk, moderator=staff, reason="abuse")
    assert BlockedMedia.objects.get(sha256=media.sha256).pdq_hashes == [good, crop]
    already.refresh_from_db()
    assert already.pdq_hashes == [flat]
    assert blocklist.match([_entry(good)]).blocked_id == BlockedMedia.objects.get(sha256=media.sha256).pk


# --- end to end through the worker ---------------------------------------------------------------------


def _attach(user, post, data: bytes, name: str = "a.jpg") -> str:
    r = client_for(user).post(
        f"/api/v1/content/posts/{post.pk}/media", {"file": upload_file(name, data)}, format="multipart"
    )
    assert r.status_code == 201, r.content
    return r.json()["id"]


def _drain(broker, worker, queue="media.image"):
    broker.join(queue, fail_fast=False)
    worker.join()


@pytest.mark.django_db(transaction=True)
def test_worker_blocks_a_reencoded_resized_cropped_copy_of_a_rejected_picture(
    broker, worker, platform, staff
):
    platform(moderation_mode="reactive_only", blocked_media_action="quarantine")
    blocklist.invalidate()
    picture = scene_image(41, (1600, 1200))
    creator = UserFactory()
    first = PostFactory(author=creator, type="image", body="")
    first_media = _attach(creator, first, image_bytes(picture))
    _drain(broker, worker)
    row = Media.objects.get(pk=first_media)
    assert row.processing_status == ProcessingStatus.READY, row.processing_error
    own = [h for h in row.pdq_hashes if not pdq.is_crop(h["source"])]
    assert [h["source"] for h in own] == ["medium"] and own[0]["quality"] >= 80
    assert len(row.pdq_hashes) == 1 + len(pdq.CROPS)
    Post.objects.filter(pk=first.pk).update(status="pending_review")
    services.post_reject(post_id=first.pk, moderator=staff, reason="abuse")
    assert len(BlockedMedia.objects.get(sha256=row.sha256).pdq_hashes) == 1 + len(pdq.CROPS)

    # Another account re-uploads it re-encoded (JPEG q=60), halved and cropped 4 % per edge.
    reuploader = UserFactory()
    copy_post = PostFactory(author=reuploader, type="image", body="")
    copy_id = _attach(reuploader, copy_post, reencoded_copy(picture, scale=0.5, crop=0.04, quality=60))
    # ...and an unrelated picture.
    clean_post = PostFactory(author=reuploader, type="image", body="")
    clean_id = _attach(reuploader, clean_post, image_bytes(scene_image(42, (1600, 1200))))
    _drain(broker, worker)

    copy = Media.objects.get(pk=copy_id)
    assert copy.sha256 != row.sha256 and copy.processing_status == ProcessingStatus.READY
    assert copy.metadata["blocked_media"] is True
    match = copy.metadata["blocked_match"]
    assert match["blocked_id"] == BlockedMedia.objects.get(sha256=row.sha256).pk and match["distance"] <= 31
    assert Post.objects.get(pk=copy_post.pk).blocked_media is True
    r = client_for(reuploader).post(f"/api/v1/content/posts/{copy_post.pk}/publish")
    assert r.json()["status"] == "quarantined", r.content
    # The uploader is not told which blocked hash matched, or how closely.
    data = client_for(reuploader).get(f"/api/v1/content/media/{copy_id}").json()
    assert data["metadata"].get("blocked_media") is True and "blocked_match" not in data["metadata"]

    clean = Media.objects.get(pk=clean_id)
    assert clean.processing_status == ProcessingStatus.READY and "blocked_media" not in clean.metadata
    assert Post.objects.get(pk=clean_post.pk).blocked_media is False
    steps = {s["name"]: s for s in ProcessorRun.objects.get(media=clean).steps}
    assert steps["pdq_blocklist"]["output"] == {"matched": False} and steps["pdq_hash"]["status"] == "ok"


@pytest.mark.django_db(transaction=True)
def test_worker_refuses_a_near_duplicate_when_the_platform_refuses_blocked_media(broker, platform):
    platform(moderation_mode="reactive_only", blocked_media_action="refuse")
    blocklist.invalidate()
    picture = scene_image(43, (1200, 900))
    blocked = [h.hex for h in [pdq.hash_image(picture), *pdq.crop_hashes(picture)]]
    BlockedMedia.objects.create(sha256="f" * 64, pdq_hashes=blocked)
    user = UserFactory()
    post = PostFactory(author=user, type="image", body="")
    media_id = _attach(user, post, reencoded_copy(picture, scale=0.5, crop=0.03))
    broker.flush_all()
    pipeline.run(media_id, kind="image")
    row = Media.objects.get(pk=media_id)
    assert row.processing_status == ProcessingStatus.FAILED
    assert "blocked" in row.processing_error.lower() and row.failed_permanently


def test_video_poster_and_sampled_frames_are_hashed(tmp_path):
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=4",
        ]
        + ["-pix_fmt", "yuv420p", "-c:v", "libx264", str(clip)],
        check=True,
    )
    hashes = pdq.video_frame_hashes(clip, duration=4.0, count=4, workdir=tmp_path, timeout=60)
    assert [h.source for h in hashes] == ["frame@0.5", "frame@1.5", "frame@2.5", "frame@3.5"]
    assert all(len(h.hex) == 64 and h.quality > 50 for h in hashes)
    assert len({h.hex for h in hashes}) == 4  # testsrc2 moves: four different pictures


@pytest.mark.django_db(transaction=True)
def test_worker_hashes_a_videos_poster_and_frames(broker, platform, tmp_path):
    platform(moderation_mode="reactive_only")
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i"]
        + ["testsrc2=size=640x360:rate=25:duration=3", "-pix_fmt", "yuv420p", "-c:v", "libx264", str(clip)],
        check=True,
    )
    user = UserFactory()
    post = PostFactory(author=user, type="video", body="")
    media_id = _attach(user, post, clip.read_bytes(), name="clip.mp4")
    broker.flush_all()
    pipeline.run(media_id, kind="video")
    row = Media.objects.get(pk=media_id)
    assert row.processing_status == ProcessingStatus.READY, row.processing_error
    sources = [h["source"] for h in row.pdq_hashes]
    assert sources[0] == "poster" and sources[1:] == ["frame@0.4", "frame@1.1", "frame@1.9", "frame@2.6"]
    assert all(len(h["hash"]) == 64 and h["quality"] > 50 for h in row.pdq_hashes)
