"""The production topology end to end: gunicorn + rundramatiq + PostgreSQL + Redis + moto S3."""

import hashlib
import io
import subprocess

import pytest
import requests
from PIL import Image

from tests.integration.stack import wait_for

pytestmark = pytest.mark.integration


def jpeg_with_gps(w=1600, h=1200) -> bytes:
    img = Image.effect_noise((w, h), 40).convert("RGB")
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)}  # GPS IFD
    exif[0x0112] = 1
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85, exif=exif)
    return buf.getvalue()


def make_video(path, *, seconds=2, size="320x240", codec="libx264", container_args=()):
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
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-c:v",
            codec,
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            *container_args,
            str(path),
        ],
        check=True,
    )
    return path.read_bytes()


def create_post(s, type_, **fields):
    r = s.post(s.base + "/api/v1/content/posts", json={"type": type_, "title": f"a {type_}", **fields})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def presigned_upload(s, data: bytes, filename: str, content_type: str) -> str:
    r = s.post(
        s.base + "/api/v1/content/uploads",
        json={
            "filename": filename,
            "content_type": content_type,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert r.status_code == 201, r.text
    target = r.json()
    assert target["method"] == "POST" and target["fields"]  # S3 presigned POST
    up = requests.post(target["url"], data=target["fields"], files={"file": (filename, data, content_type)})
    assert up.status_code in (200, 204), up.text
    return target["upload_id"]


def test_s3_presigned_upload_to_published_image(stack, s3_client, s3_server):
    s = stack.session()
    post_id = create_post(s, "image")
    data = jpeg_with_gps()
    upload_id = presigned_upload(s, data, "holiday.jpg", "image/jpeg")
    r = s.post(f"{s.base}/api/v1/content/posts/{post_id}/media", json={"upload_id": upload_id})
    assert r.status_code == 201, r.text
    media_id = r.json()["id"]
    r = s.post(f"{s.base}/api/v1/content/posts/{post_id}/publish")
    assert r.status_code == 202 and r.json()["publish_requested"]
    stack.wait_media(media_id)
    wait_for(
        lambda: s.get(f"{s.base}/api/v1/content/posts/{post_id}").json()["status"] == "published",
        timeout=30,
        what="published",
    )
    # the bytes live in the private bucket under the media's keys; the staged upload is gone
    _, bucket = s3_server
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="media/")["Contents"]}
    prefix = f"media/{s.user_id}/{media_id}/"
    assert f"{prefix}original.jpg" in keys and any(k.startswith(prefix + "thumb") for k in keys)
    staged = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"uploads/{s.user_id}/").get("KeyCount", 0)
    assert staged == 0
    # an anonymous viewer gets presigned S3 URLs for variants, never the original, and no GPS in them
    media = requests.get(f"{s.base}/api/v1/content/media/{media_id}").json()
    assert media["original_url"] is None
    url = (
        media["variants"]["large"]["url"]
        if "large" in media["variants"]
        else media["variants"]["small"]["url"]
    )
    assert "X-Amz-Signature" in url
    got = requests.get(url)
    assert got.status_code == 200
    img = Image.open(io.BytesIO(got.content))
    assert not img.getexif() and "exif" not in img.info
    # unsigned or tampered access to the private bucket is refused
    assert requests.get(url.split("?")[0]).status_code == 403


def test_draft_media_on_s3_is_served_only_to_its_owner(stack):
    s, stranger = stack.session(), stack.session()
    post_id = create_post(s, "image")
    r = s.post(
        f"{s.base}/api/v1/content/posts/{post_id}/media",
        files={"file": ("a.jpg", jpeg_with_gps(400, 300), "image/jpeg")},
    )
    media_id = r.json()["id"]
    stack.wait_media(media_id)
    media = s.get(f"{s.base}/api/v1/content/media/{media_id}").json()
    url = media["variants"]["thumb"]["url"]
    assert "X-Amz-Signature" not in url  # not published: served through Django, which checks the viewer
    assert s.get(url).status_code == 200
    assert stranger.get(url).status_code == 404
    assert requests.get(url).status_code == 404
    assert stranger.get(f"{s.base}/api/v1/content/media/{media_id}").status_code == 404


def test_real_worker_processes_video_and_audio(stack, tmp_path):
    s = stack.session()
    post_id = create_post(s, "video")
    data = make_video(tmp_path / "clip.mp4", seconds=2)
    r = s.post(
        f"{s.base}/api/v1/content/posts/{post_id}/media", files={"file": ("clip.mp4", data, "video/mp4")}
    )
    assert r.status_code == 201, r.text
    stack.wait_media(r.json()["id"], timeout=120)
    media = s.get(f"{s.base}/api/v1/content/media/{r.json()['id']}").json()
    assert media["duration_seconds"] == pytest.approx(2, abs=0.2)
    assert "poster" in media["variants"] and any(k.endswith("p") for k in media["variants"])
    runs = stack.sql(
        "SELECT result, queue, actor, attempt FROM media_processorrun WHERE media_id = %s", r.json()["id"]
    )
    assert runs == [("succeeded", "media.video", "process_video_media", 1)]


def test_readyz_reports_each_dependency(stack):
    r = requests.get(stack.base + "/readyz")
    assert r.status_code == 200 and all(c["ok"] for c in r.json()["checks"].values())


def test_s3_upload_with_wrong_checksum_fails_in_the_worker(stack):
    s = stack.session()
    post_id = create_post(s, "image")
    data = jpeg_with_gps(300, 200)
    r = s.post(
        s.base + "/api/v1/content/uploads",
        json={"filename": "x.jpg", "content_type": "image/jpeg", "size": len(data), "sha256": "ab" * 32},
    )
    target = r.json()
    assert requests.post(
        target["url"], data=target["fields"], files={"file": ("x.jpg", data, "image/jpeg")}
    ).status_code in (200, 204)
    r = s.post(f"{s.base}/api/v1/content/posts/{post_id}/media", json={"upload_id": target["upload_id"]})
    assert r.status_code == 201  # size checked now with a HEAD; the bytes are hashed by the worker
    stack.wait_media(r.json()["id"], "failed")
    media = s.get(f"{s.base}/api/v1/content/media/{r.json()['id']}").json()
    assert "sha256" in media["processing_error"] and media["sha256"] == hashlib.sha256(data).hexdigest()


def test_s3_upload_larger_than_declared_is_refused_by_the_policy(stack):
    s = stack.session()
    data = jpeg_with_gps(300, 200)
    target = s.post(
        s.base + "/api/v1/content/uploads",
        json={"filename": "x.jpg", "content_type": "image/jpeg", "size": len(data) - 100},
    ).json()
    r = requests.post(target["url"], data=target["fields"], files={"file": ("x.jpg", data, "image/jpeg")})
    if r.status_code in (200, 204):  # a server that ignores the policy: our attach still refuses it
        post_id = create_post(s, "image")
        r = s.post(f"{s.base}/api/v1/content/posts/{post_id}/media", json={"upload_id": target["upload_id"]})
        assert r.status_code == 400 and r.json()["code"] == "size_mismatch"
    else:
        assert r.status_code == 400 and b"EntityTooLarge" in r.content
