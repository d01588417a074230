"""A moderator's round trip in a real browser: log in through the admin form, see the queue with a
thumbnail that actually loads, open the post, approve it, and the API then serves it publicly."""

import io
import json
import shutil
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from PIL import Image

from media import storage
from tests.factories import AiReviewFactory, MediaFactory, PostFactory, ReportFactory, UserFactory
from tests.moderation.test_admin import make_moderator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = "/tmp/postflow-queue.png"
PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None,
        reason=f"needs Debian's chromium at {CHROMIUM}",
    ),
]


def _jpeg(size: int, color) -> io.BytesIO:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "JPEG", quality=85)
    buf.seek(0)
    return buf


def _image_post_with_stored_variants():
    creator = UserFactory(username="creator")
    post = PostFactory(
        author=creator,
        type="image",
        title="Sunset over the bay",
        body="",
        status="pending_review",
        moderation_state="under_review",
        submitted_at=timezone.now() - timedelta(minutes=42),
    )
    media = MediaFactory(post=post, owner=creator, mime_type="image/jpeg", width=640, height=640)
    variants = {}
    for name, size, color in (("thumb", 320, (230, 120, 40)), ("medium", 640, (40, 90, 200))):
        key = storage.media_key(creator.pk, media.pk, name, "jpg")
        storage.save(key, _jpeg(size, color), "image/jpeg")
        variants[name] = {
            "key": key,
            "width": size,
            "height": size,
            "mime_type": "image/jpeg",
            "size_bytes": 1,
        }
    media.variants = variants
    media.save(update_fields=["variants"])
    AiReviewFactory(post=post, overall_score=0.42, labels=["suggestive"], decision="review")
    ReportFactory(post=post)
    return post


@pytest.mark.django_db(transaction=True)
def test_moderator_approves_a_post_in_the_browser(live_server):
    from playwright.sync_api import sync_playwright

    moderator = make_moderator(username="mod")
    post = _image_post_with_stored_variants()
    base = live_server.url

    # No ORM calls while Playwright's loop runs in this thread (Django refuses them in async contexts).
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(10_000)
            page.goto(f"{base}/admin/login/?next=/admin/moderation/reviewqueue/")
            page.fill("#id_username", moderator.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/moderation/reviewqueue/")

            assert "Sunset over the bay" in page.inner_text("#result_list")
            page.wait_for_function(
                "() => { const i = document.querySelector('img.pf-thumb');"
                " return i && i.complete && i.naturalWidth > 0; }"
            )
            assert page.eval_on_selector("img.pf-thumb", "i => i.naturalWidth") == 320
            page.screenshot(path=SCREENSHOT, full_page=True)

            page.click("text=Sunset over the bay")
            page.wait_for_selector("#pf-decide-form")
            page.wait_for_function(
                "() => { const i = document.querySelector('img.pf-image');"
                " return i && i.complete && i.naturalWidth === 640; }"
            )
            page.click("button[value=approve]")
            page.wait_for_url("**/admin/moderation/reviewqueue/")
            success = page.inner_text("ul.messagelist li.success")
            assert "Approved “Sunset over the bay”" in success and "published" in success
            assert "Sunset over the bay" not in page.inner_text("#content-main")
        finally:
            browser.close()

    with urllib.request.urlopen(f"{base}/api/v1/content/posts/{post.pk}", timeout=10) as response:  # noqa: S310
        assert response.status == 200
        body = json.loads(response.read())
    assert body["status"] == "published" and body["moderation_state"] == "approved"
    assert Path(SCREENSHOT).stat().st_size > 0


DASHBOARD_SCREENSHOT = "/tmp/postflow-dashboard.png"


@pytest.mark.django_db(transaction=True)
def test_moderator_opens_the_pipeline_dashboard_from_the_queue(live_server):
    from tests.factories import ProcessorRunFactory

    moderator = make_moderator(username="mod")
    media = MediaFactory()
    for seconds in (1, 2, 3, 8):
        ProcessorRunFactory(media=media, processor="image", duration_ms=seconds * 1000.0)
    ProcessorRunFactory(media=media, processor="video", result="failed", error_class="builtins.OSError")
    AiReviewFactory(overall_score=0.8, decision="quarantine")

    with sync_playwright_or_skip() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(10_000)
            page.goto(f"{live_server.url}/admin/login/?next=/admin/moderation/reviewqueue/")
            page.fill("#id_username", moderator.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/moderation/reviewqueue/")
            page.click("text=Pipeline dashboard")
            page.wait_for_url("**/admin/pipeline/")
            page.wait_for_selector("svg.pf-chart")
            charts = page.eval_on_selector_all(
                "svg.pf-chart",
                "els => els.map(e => ({label: e.getAttribute('aria-label'),"
                " w: e.getBoundingClientRect().width, bars: [...e.querySelectorAll('rect.pf-bar')]"
                ".filter(r => r.getBBox().height > 0).length}))",
            )
            page.screenshot(path=DASHBOARD_SCREENSHOT, full_page=True)
        finally:
            browser.close()
    labels = [c["label"] for c in charts]
    assert labels == [
        "Media processed per hour",
        "Processing time by kind",
        "Failures by error class",
        "Queue depth now",
        "AI decisions by band",
        "Submission to human decision",
    ]
    assert all(c["w"] > 300 for c in charts)
    bars = {c["label"]: c["bars"] for c in charts}
    assert bars["Processing time by kind"] == 2 and bars["Failures by error class"] == 1  # p50+p95 of image
    assert bars["AI decisions by band"] == 1 and bars["Media processed per hour"] >= 1
    assert Path(DASHBOARD_SCREENSHOT).stat().st_size > 10_000


def sync_playwright_or_skip():
    from playwright.sync_api import sync_playwright

    return sync_playwright()
