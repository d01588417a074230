"""Media delivery (DESIGN.md §8): ranged and conditional serving on ``/m/``, the cache policy, stable
signed URLs on both backends, and HLS under one signed prefix — with a real player (hls.js in
headless Chromium) for the last."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.conf import settings as django_settings

from content.models import PostType
from media import storage
from media.models import Media
from tests.conftest import client_for
from tests.factories import MediaFactory, PostFactory, UserFactory

pytestmark = pytest.mark.django_db

BLOB = os.urandom(300_000)


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _video(owner, *, published: bool, sha_recorded: bool = True, data: bytes = BLOB) -> Media:
    post = PostFactory(author=owner, type=PostType.VIDEO, body="", published=published)
    media = MediaFactory(post=post, owner=owner, kind="video", mime_type="video/mp4")
    key = storage.media_key(owner.pk, media.pk, "720p", "mp4")
    storage.save(key, io.BytesIO(data), "video/mp4")
    variant = {"key": key, "mime_type": "video/mp4", "width": 1280, "height": 720, "size_bytes": len(data)}
    if sha_recorded:
        variant["sha256"] = hashlib.sha256(data).hexdigest()
    media.variants = {"720p": variant}
    media.original_key = storage.media_key(owner.pk, media.pk, "original", "mp4")
    media.save(update_fields=["variants", "original_key"])
    return media


def _variant_url(media, viewer=None, name="720p") -> str:
    data = client_for(viewer).get(f"/api/v1/content/media/{media.pk}").json()
    return data["variants"][name]["url"]


def _path(url: str) -> str:
    return urlsplit(url).path


# --- ranges ----------------------------------------------------------------------------------------------


def test_full_get_carries_validators_and_public_cache_policy(user):
    media = _video(user, published=True)
    r = client_for().get(_path(_variant_url(media)))
    assert r.status_code == 200 and _body(r) == BLOB
    assert r["Accept-Ranges"] == "bytes" and r["Content-Length"] == str(len(BLOB))
    assert r["ETag"] == f'"{hashlib.sha256(BLOB).hexdigest()}"'
    assert r["Last-Modified"].endswith("GMT")
    cache_control = r["Cache-Control"]
    assert cache_control.startswith("public, max-age=") and cache_control.endswith(", immutable")
    max_age = int(cache_control.split("max-age=")[1].split(",")[0])
    ttl = django_settings.MEDIA_URL_TTL_SECONDS
    assert ttl - 5 <= max_age <= ttl + ttl // 2  # the seconds the URL has left


@pytest.mark.parametrize(
    "header, start, end",
    [
        ("bytes=10-19", 10, 19),
        ("bytes=299990-", 299990, 299999),
        ("bytes=-5", 299995, 299999),
        ("bytes=299000-999999", 299000, 299999),
        ("bytes=0-0", 0, 0),
    ],
)
def test_single_range_is_206_read_at_that_offset(user, monkeypatch, header, start, end):
    media = _video(user, published=True)
    url = _path(_variant_url(media))
    reads = []
    real = storage.iter_range
    monkeypatch.setattr(storage, "iter_range", lambda k, s, n: reads.append((s, n)) or real(k, s, n))
    r = client_for().get(url, HTTP_RANGE=header)
    assert r.status_code == 206
    assert r["Content-Range"] == f"bytes {start}-{end}/{len(BLOB)}"
    assert r["Content-Length"] == str(end - start + 1)
    assert _body(r) == BLOB[start : end + 1]
    assert reads == [(start, end - start + 1)]  # only the range is read from storage


def test_unsatisfiable_range_is_416_with_the_size(user):
    media = _video(user, published=True)
    for header in ("bytes=300000-", "bytes=999999-1000000", "bytes=-0"):
        r = client_for().get(_path(_variant_url(media)), HTTP_RANGE=header)
        assert r.status_code == 416, header
        assert r["Content-Range"] == f"bytes */{len(BLOB)}"  # kept by JsonApiErrorsMiddleware
        assert r.json()["code"] == "range_not_satisfiable"


def test_malformed_or_multiple_ranges_get_the_whole_object(user):
    media = _video(user, published=True)
    for header in ("bytes=5-1", "items=0-5", "bytes=0-1,5-6", "bytes=abc"):
        r = client_for().get(_path(_variant_url(media)), HTTP_RANGE=header)
        assert r.status_code == 200 and len(_body(r)) == len(BLOB), header


def test_head_answers_headers_only(user):
    media = _video(user, published=True)
    r = client_for().head(_path(_variant_url(media)), HTTP_RANGE="bytes=0-9")
    assert r.status_code == 200 and r["Content-Length"] == str(len(BLOB)) and r.content == b""
    assert r["Accept-Ranges"] == "bytes" and r["ETag"]


# --- validators --------------------------------------------------------------------------------------------


def test_conditional_requests_answer_304(user):
    media = _video(user, published=True)
    url = _path(_variant_url(media))
    first = client_for().get(url)
    etag, modified = first["ETag"], first["Last-Modified"]
    for headers in (
        {"HTTP_IF_NONE_MATCH": etag},
        {"HTTP_IF_NONE_MATCH": f'"nope", W/{etag}'},
        {"HTTP_IF_MODIFIED_SINCE": modified},
    ):
        r = client_for().get(url, **headers)
        assert r.status_code == 304 and r.content == b"", headers
        assert r["ETag"] == etag and r["Cache-Control"].startswith("public")
    r = client_for().get(url, HTTP_IF_NONE_MATCH='"other"', HTTP_IF_MODIFIED_SINCE=modified)
    assert r.status_code == 200  # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2)
    r = client_for().get(url, HTTP_IF_MODIFIED_SINCE="Sat, 01 Jan 2000 00:00:00 GMT")
    assert r.status_code == 200


def test_if_range_honoured(user):
    media = _video(user, published=True)
    url = _path(_variant_url(media))
    etag, modified = (lambda r: (r["ETag"], r["Last-Modified"]))(client_for().head(url))
    assert client_for().get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=etag).status_code == 206
    assert client_for().get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=modified).status_code == 206
    stale = client_for().get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"an-older-version"')
    assert stale.status_code == 200 and len(_body(stale)) == len(BLOB)
    weak = client_for().get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=f"W/{etag}")
    assert weak.status_code == 200  # If-Range compares strongly


def test_etag_of_rows_without_a_recorded_sha_is_computed_once(user, monkeypatch):
    media = _video(user, published=True, sha_recorded=False)
    url = _path(_variant_url(media))
    calls = []
    real = storage.sha256_of
    monkeypatch.setattr(storage, "sha256_of", lambda k: calls.append(k) or real(k))
    assert client_for().head(url)["ETag"] == f'"{hashlib.sha256(BLOB).hexdigest()}"'
    assert client_for().head(url)["ETag"] == f'"{hashlib.sha256(BLOB).hexdigest()}"'
    assert len(calls) == 1


def test_unpublished_media_is_private_no_store_and_owner_only(user, other_user):
    media = _video(user, published=False)
    url = _path(_variant_url(media, user))
    r = client_for(user).get(url, HTTP_RANGE="bytes=5-9")
    assert r.status_code == 206 and _body(r) == BLOB[5:10]
    assert r["Cache-Control"] == "private, no-store"
    for who in (other_user, None):
        assert client_for(who).get(url, HTTP_RANGE="bytes=5-9").status_code == 404


# --- stable URLs ----------------------------------------------------------------------------------------


def test_url_window_rounds_expiry_up_to_half_ttl():
    assert storage.url_window(3600, now=7200) == (7200, 7200 + 1800 + 3600)
    assert storage.url_window(3600, now=8999) == (7200, 12600)
    assert storage.url_window(3600, now=9000) == (9000, 14400)
    for now in (7200, 8000, 8999.9):
        start, expires = storage.url_window(3600, now=now)
        assert expires % 1800 == 0 and expires - now > 3600


def test_published_urls_are_identical_for_every_viewer_within_a_window(user, other_user, monkeypatch):
    media = _video(user, published=True)
    first = _variant_url(media)
    time.sleep(1.1)  # a timestamped signature would differ now
    assert {_variant_url(media), _variant_url(media, other_user), _variant_url(media, user)} == {first}
    draft = _video(user, published=False)
    assert _variant_url(draft, user) == _variant_url(draft, user)
    # the next window gets a new URL
    start, _ = storage.url_window()
    real_time = time.time
    monkeypatch.setattr(storage.time, "time", lambda: real_time() + django_settings.MEDIA_URL_TTL_SECONDS)
    assert _variant_url(media) != first


def test_s3_presigned_urls_are_signed_at_the_window_start_and_work(s3, user, other_user):
    media = _video(user, published=True)
    first = _variant_url(media)
    assert "X-Amz-Signature" in first
    time.sleep(1.1)
    assert _variant_url(media, other_user) == first
    query = parse_qs(urlsplit(first).query)
    start, expires = storage.url_window()
    assert query["X-Amz-Date"] == [time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start))]
    assert query["X-Amz-Expires"] == [str(expires - start)]
    r = requests.get(first, headers={"Range": "bytes=100-199"}, timeout=10)
    assert r.status_code == 206 and r.content == BLOB[100:200]
    # botocore's clock is only fixed inside the signing: other signatures are stamped now
    other = (
        storage.backend()
        ._client()
        .generate_presigned_url("get_object", Params={"Bucket": s3.bucket, "Key": "x"})
    )
    assert parse_qs(urlsplit(other).query)["X-Amz-Date"] != query["X-Amz-Date"]


def test_s3_unpublished_media_is_served_through_django_with_ranged_gets(s3, user, monkeypatch):
    media = _video(user, published=False)
    url = _variant_url(media, user)
    assert url.startswith("http://testserver/m/")
    ranges = []
    client = storage.backend()._client()
    real = client.get_object
    monkeypatch.setattr(client, "get_object", lambda **kw: ranges.append(kw.get("Range")) or real(**kw))
    r = client_for(user).get(_path(url), HTTP_RANGE="bytes=250000-250099")
    assert r.status_code == 206 and _body(r) == BLOB[250000:250100]
    assert ranges == ["bytes=250000-250099"]
    assert r["ETag"] == f'"{hashlib.sha256(BLOB).hexdigest()}"'
    etag = r["ETag"]
    assert client_for(user).get(_path(url), HTTP_IF_NONE_MATCH=etag).status_code == 304


# --- HLS ----------------------------------------------------------------------------------------------------

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def make_hls_tree(dest: Path, seconds: int = 12) -> Path:
    """An fMP4 HLS tree as ffmpeg writes it for the video processor (master + one rendition with
    init and ~2 s segments): ``dest/master.m3u8``, ``dest/v0/{index.m3u8,init.mp4,seg_NNN.m4s}``."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(  # noqa: S603
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc=size=320x240:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=duration={seconds}",
            "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-c:a", "aac", "-b:a", "64k",
            "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
            "-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", "v%v/seg_%03d.m4s",
            "-master_pl_name", "master.m3u8", "-var_stream_map", "v:0,a:0", "v%v/index.m3u8",
        ],
        cwd=dest,
        check=True,
        timeout=120,
    )  # fmt: skip
    return dest


def store_hls(media: Media, tree: Path) -> str:
    """Store a tree under the layout the video processor uses (``…/hls/``); returns the master key."""
    folder = f"{storage.media_prefix(media.owner_id, media.pk)}hls"
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        storage.save(f"{folder}/{path.relative_to(tree).as_posix()}", path, None)
    key = f"{folder}/master.m3u8"
    media.variants = {
        **media.variants,
        "hls": {"key": key, "mime_type": "application/vnd.apple.mpegurl", "width": 320, "height": 240},
    }
    media.save(update_fields=["variants"])
    return key


@pytest.fixture(scope="module")
def hls_tree(tmp_path_factory):
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    return make_hls_tree(tmp_path_factory.mktemp("hls"))


def test_hls_prefix_token_serves_the_tree_with_types_and_ranges(user, other_user, hls_tree):
    media = _video(user, published=False)
    store_hls(media, hls_tree)
    master = client_for(user).get(f"/api/v1/content/media/{media.pk}").json()["variants"]["hls"]
    assert master["mime_type"] == "application/vnd.apple.mpegurl"
    url = _path(master["url"])
    assert url.startswith("/m/h/") and url.endswith("/master.m3u8")
    base = url.rsplit("/", 1)[0]
    r = client_for(user).get(url)
    assert r.status_code == 200 and r["Content-Type"] == "application/vnd.apple.mpegurl"
    assert _body(r) == (hls_tree / "master.m3u8").read_bytes()
    r = client_for(user).get(f"{base}/v0/index.m3u8")
    assert r.status_code == 200 and b"seg_000.m4s" in _body(r)
    assert client_for(user).get(f"{base}/v0/init.mp4")["Content-Type"] == "video/mp4"
    seg = (hls_tree / "v0" / "seg_001.m4s").read_bytes()
    r = client_for(user).get(f"{base}/v0/seg_001.m4s", HTTP_RANGE="bytes=8-15")
    assert r.status_code == 206 and _body(r) == seg[8:16] and r["Content-Type"] == "video/iso.segment"
    assert r["Cache-Control"] == "private, no-store"
    # a draft's segment is refused to anyone else, at request time
    for who in (other_user, None):
        assert client_for(who).get(f"{base}/v0/seg_001.m4s").status_code == 404
    # nothing outside the granted folder, and no traversal
    for rest in ("../original.mp4", "../720p.mp4", "v0/../../720p.mp4", "v0/missing.m4s", "v0/x.exe"):
        assert client_for(user).get(f"{base}/{rest}").status_code in (403, 404), rest
    tampered = url.replace("/m/h/", "/m/h/x")
    assert client_for(user).get(tampered).status_code == 403


def test_hls_urls_of_published_media_are_public_and_stable(user, other_user, hls_tree):
    media = _video(user, published=True)
    store_hls(media, hls_tree)
    urls = {_variant_url(media, who, "hls") for who in (None, other_user, user)}
    assert len(urls) == 1
    r = client_for().get(_path(urls.pop()).rsplit("/", 1)[0] + "/v0/seg_000.m4s")
    assert r.status_code == 200 and r["Cache-Control"].startswith("public, max-age=")


def test_hls_files_get_the_recorded_sha256_as_etag_without_reading_them_whole(user, hls_tree, monkeypatch):
    # the video runner records every file's sha256 in variants.hls.files (the master's in .sha256):
    # a ranged segment request must not download the whole object to make its ETag
    media = _video(user, published=True)
    store_hls(media, hls_tree)
    sha = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in hls_tree.rglob("*") if p.is_file()}
    master = hls_tree / "master.m3u8"
    media.variants["hls"]["sha256"] = sha[master]
    media.variants["hls"]["files"] = {
        p.relative_to(hls_tree).as_posix(): {"size_bytes": p.stat().st_size, "sha256": h}
        for p, h in sha.items()
        if p != master
    }
    media.save(update_fields=["variants"])
    monkeypatch.setattr(storage, "sha256_of", lambda key: pytest.fail(f"{key} was read whole for its ETag"))
    url = _path(_variant_url(media, None, "hls"))
    base = url.rsplit("/", 1)[0]
    r = client_for().get(f"{base}/v0/seg_001.m4s", HTTP_RANGE="bytes=0-3")
    assert r.status_code == 206 and r["ETag"] == f'"{sha[hls_tree / "v0" / "seg_001.m4s"]}"'
    assert client_for().head(url)["ETag"] == f'"{sha[master]}"'
    r = client_for().get(f"{base}/v0/init.mp4", HTTP_IF_NONE_MATCH=f'"{sha[hls_tree / "v0" / "init.mp4"]}"')
    assert r.status_code == 304


def test_s3_rotation_moves_the_hls_tree(s3, user, staff, hls_tree):
    from media import revocation
    from moderation import services as moderation_services

    media = _video(user, published=True)
    old_master = store_hls(media, hls_tree)
    old_tree = set(storage.list_prefix(old_master.rsplit("/", 1)[0]))
    assert "X-Amz-Signature" in _variant_url(media)  # marks the bearer URLs as exposed
    hls_url = _path(_variant_url(media, None, "hls"))
    moderation_services.post_quarantine(post_id=media.post.pk, moderator=staff, reason="test")
    assert revocation.media_revoke_post_urls(post_id=media.post.pk).rotated == [str(media.pk)]
    media.refresh_from_db()
    new_master = media.variants["hls"]["key"]
    new_folder = new_master.rsplit("/", 1)[0]
    assert new_master != old_master and new_master.endswith("/hls/master.m3u8")
    assert {k[len(new_folder) :] for k in storage.list_prefix(new_folder)} == {
        k[len(old_master.rsplit("/", 1)[0]) :] for k in old_tree
    }
    assert not any(storage.exists(k) for k in old_tree)
    assert client_for(user).get(hls_url).status_code == 404  # the old folder's token grants nothing
    fresh = _path(_variant_url(media, user, "hls"))
    r = client_for(user).get(fresh.rsplit("/", 1)[0] + "/v0/seg_002.m4s", HTTP_RANGE="bytes=0-3")
    assert r.status_code == 206 and _body(r) == (hls_tree / "v0" / "seg_002.m4s").read_bytes()[:4]


# --- a real player ------------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
HLS_JS = Path(__file__).resolve().parents[2] / "static" / "vendor" / "hls.min.js"
PLAYER = """<!doctype html><html><body><video id="v" muted playsinline></video><script>
window.pfErrors = [];
</script></body></html>"""


def _play_and_seek(browser, base: str, src: str, *, seek_to: float):
    """Open a same-origin page with the vendored hls.js, play ``src`` (muted), wait until it
    plays, seek to ``seek_to`` seconds and wait until playback runs on past it. Returns the page;
    its ``window.pfErrors`` lists hls.js's fatal errors."""
    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.route(f"{base}/player", lambda route: route.fulfill(body=PLAYER, content_type="text/html"))
    page.goto(f"{base}/player")
    page.add_script_tag(path=str(HLS_JS))
    page.evaluate(
        """(src) => { const v = document.getElementById('v');
           const hls = new Hls(); window.hls = hls;
           hls.on(Hls.Events.ERROR, (e, d) => { if (d.fatal) window.pfErrors.push(d.details); });
           hls.loadSource(src); hls.attachMedia(v);
           hls.on(Hls.Events.MANIFEST_PARSED, () => v.play()); }""",
        src,
    )
    page.wait_for_function("() => document.getElementById('v').currentTime > 0.5")
    page.evaluate("(t) => { document.getElementById('v').currentTime = t; }", seek_to)
    page.wait_for_function("(t) => document.getElementById('v').currentTime > t + 0.3", arg=seek_to)
    return page


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM}")
@pytest.mark.django_db(transaction=True)
def test_hls_js_plays_and_seeks_in_chromium(live_server, hls_tree):
    from playwright.sync_api import sync_playwright

    from tests.moderation.test_admin_browser import CHROMIUM_ARGS

    owner, other = UserFactory(), UserFactory()
    media = _video(owner, published=True)
    store_hls(media, hls_tree)
    draft = _video(owner, published=False)
    store_hls(draft, hls_tree)
    hls_url = _variant_url(media, None, "hls")
    draft_segment = _path(_variant_url(draft, owner, "hls")).rsplit("/", 1)[0] + "/v0/seg_001.m4s"
    base = live_server.url

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = _play_and_seek(browser, base, f"{base}{_path(hls_url)}", seek_to=8)
            assert page.evaluate("() => window.pfErrors") == []
            assert Hls_supported(page)
            # another user's browser cannot fetch a segment of a draft
            status = page.evaluate("(u) => fetch(u).then(r => r.status)", f"{base}{draft_segment}")
            assert status == 404
        finally:
            browser.close()
    headers = {"Authorization": f"Token {other.auth_token.key}"}
    assert requests.get(f"{base}{draft_segment}", headers=headers, timeout=10).status_code == 404
    owner_headers = {"Authorization": f"Token {owner.auth_token.key}"}
    assert requests.get(f"{base}{draft_segment}", headers=owner_headers, timeout=10).status_code == 200


def Hls_supported(page) -> bool:  # noqa: N802
    return bool(page.evaluate("() => Hls.isSupported()"))


@pytest.mark.slow
@pytest.mark.browser
@needs_ffmpeg
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM}")
@pytest.mark.django_db(transaction=True)
def test_hls_js_plays_and_seeks_the_video_processors_own_output(live_server, broker, tmp_path):
    """Not a hand-made tree: a clip attached through the API and processed by the video pipeline
    (the runner stores the HLS ladder under media/{u}/{m}/hls/), then played and seeked across a
    segment boundary by hls.js through the signed folder URL, and every file the row lists served."""
    from django.utils import timezone
    from playwright.sync_api import sync_playwright

    from content.models import Post
    from media import pipeline
    from tests.media.helpers import upload_file
    from tests.moderation.test_admin_browser import CHROMIUM_ARGS

    owner = UserFactory()
    post = PostFactory(author=owner, type=PostType.VIDEO, body="")
    clip = tmp_path / "clip.mp4"
    subprocess.run(  # noqa: S603
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=14",
            "-f", "lavfi", "-i", "sine=duration=14",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-shortest", "-movflags", "+faststart", str(clip),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    r = client_for(owner).post(
        f"/api/v1/content/posts/{post.pk}/media",
        {"file": upload_file("clip.mp4", clip.read_bytes())},
        format="multipart",
    )
    assert r.status_code == 201, r.content
    broker.flush_all()
    pipeline.run(r.json()["id"], kind="video")
    media = Media.objects.get(pk=r.json()["id"])
    assert media.processing_status == "ready", media.processing_error
    Post.objects.filter(pk=post.pk).update(status="published", published_at=timezone.now())

    hls_url = _variant_url(media, None, "hls")
    folder = _path(hls_url).rsplit("/", 1)[0]
    base = live_server.url
    for name in media.variants["hls"]["files"]:
        assert requests.head(f"{base}{folder}/{name}", timeout=10).status_code == 200, name
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = _play_and_seek(browser, base, f"{base}{_path(hls_url)}", seek_to=9)
            assert page.evaluate("() => window.pfErrors") == []
            assert page.evaluate("() => document.getElementById('v').duration") == pytest.approx(14, abs=0.5)
        finally:
            browser.close()
