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


TRIAGE_SCREENSHOT = "/tmp/postflow-queue-keyboard.png"


def _checkerboard(size: int = 320, square: int = 16) -> io.BytesIO:
    image = Image.new("RGB", (size, size), (255, 255, 255))
    for y in range(0, size, square):
        for x in range(0, size, square):
            if (x // square + y // square) % 2:
                image.paste((0, 0, 0), (x, y, x + square, y + square))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    buf.seek(0)
    return buf


def _contrast(png: bytes) -> float:
    """Standard deviation of the grey levels: a sharp checkerboard is ~128, a blurred one near 0."""
    from PIL import ImageStat

    return ImageStat.Stat(Image.open(io.BytesIO(png)).convert("L")).stddev[0]


def _triage_world():
    """Five queue items of five kinds, oldest first, and a troll whose published post a viewer sees."""
    from content.models import PostStatus
    from tests.factories import EstablishedUserFactory, PollFactory

    now = timezone.now()
    creator = UserFactory(username="creator")
    troll = UserFactory(username="troll")

    def waiting(minutes, **kwargs):
        kwargs.setdefault("status", PostStatus.PENDING_REVIEW)
        kwargs.setdefault("moderation_state", "under_review")
        return PostFactory(submitted_at=now - timedelta(minutes=minutes), **kwargs)

    text = waiting(50, author=creator, title="Morning thoughts")
    image = waiting(40, author=troll, type="image", title="Checkerboard", body="")
    media = MediaFactory(post=image, owner=troll, mime_type="image/jpeg", width=320, height=320)
    key = storage.media_key(troll.pk, media.pk, "thumb", "jpg")
    storage.save(key, _checkerboard(), "image/jpeg")
    media.variants = {"thumb": {"key": key, "width": 320, "height": 320, "mime_type": "image/jpeg"}}
    media.save(update_fields=["variants"])
    AiReviewFactory(post=image, overall_score=0.85, scores={"nudity": 0.85}, decision="quarantine")
    link = waiting(
        30,
        author=creator,
        type="link",
        title="Cheap pills",
        body="",
        link_url="https://spam.example/",
        status=PostStatus.QUARANTINED,
        moderation_state="flagged",
    )
    poll = PollFactory(
        post__author=creator,
        post__title="Best gore film?",
        post__status=PostStatus.PENDING_REVIEW,
        post__moderation_state="under_review",
        post__submitted_at=now - timedelta(minutes=20),
    ).post
    reported = PostFactory(author=creator, title="My honest review", published=True)
    ReportFactory(post=reported, reporter=EstablishedUserFactory(), detail="I disagree with it")
    public = PostFactory(author=troll, title="Troll's public post", published=True)
    viewer = UserFactory(username="viewer")
    return {
        "order": [text, image, link, poll, reported],
        "troll": troll,
        "public": public,
        "viewer_token": viewer.auth_token.key,
    }


def _api(base: str, path: str, token: str):
    request = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.django_db(transaction=True)
def test_moderator_triages_with_the_keyboard_and_suspends_an_account(live_server):
    """Issue 15's browser round: five items triaged with the keyboard only (approve, quarantine,
    reject with a typed reason, mark sensitive, dismiss a report), the flagged thumbnail blurred until
    clicked (checked on the screenshot's pixels), then the troll suspended from their post's page and
    their posts gone for another user (API)."""
    from content.models import Post, Report
    from moderation.models import AccountStanding

    moderator = make_moderator(username="mod")
    world = _triage_world()
    text, image, link, poll, reported = world["order"]
    base, token = live_server.url, world["viewer_token"]
    detail = "/admin/moderation/reviewqueue/{}/change/".format

    with sync_playwright_or_skip() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(10_000)
            page.goto(f"{base}/admin/login/?next=/admin/moderation/reviewqueue/")
            page.fill("#id_username", moderator.username)
            page.fill("#id_password", PASSWORD)
            page.keyboard.press("Enter")
            page.wait_for_url(f"{base}/admin/moderation/reviewqueue/")
            assert page.is_visible("#pf-shortcuts") and "mark sensitive" in page.inner_text("#pf-shortcuts")
            titles = page.eval_on_selector_all("#result_list .pf-row", "els => els.map(e => e.textContent)")
            assert titles == [
                "Morning thoughts",
                "Checkerboard",
                "Cheap pills",
                "Best gore film?",
                "My honest review",
            ]

            # The flagged thumbnail is blurred until clicked.
            page.wait_for_function(
                "() => { const i = document.querySelector('img.pf-thumb');"
                " return i && i.complete && i.naturalWidth; }"
            )
            box = page.locator(".pf-blurbox").first
            assert "pf-blur" in box.get_attribute("class").split()
            blurred = _contrast(box.locator("img").screenshot())
            page.screenshot(path=TRIAGE_SCREENSHOT, full_page=True)
            box.click()
            assert "pf-blur" not in box.get_attribute("class").split()
            sharp = _contrast(box.locator("img").screenshot())

            # Keyboard only from here: j highlights the first row, o opens it.
            page.keyboard.press("j")
            page.keyboard.press("o")
            page.wait_for_url(f"{base}{detail(text.pk)}")
            page.keyboard.press("a")  # approve → lands on the next item
            page.wait_for_url(f"{base}{detail(image.pk)}")
            assert "Approved “Morning thoughts”" in page.inner_text("ul.messagelist")
            page.keyboard.press("q")  # quarantine
            page.wait_for_url(f"{base}{detail(link.pk)}")
            page.keyboard.press("r")  # reject asks for the reason first
            assert page.evaluate("document.activeElement.id") == "pf-reason"
            page.keyboard.type("Spam link")
            page.keyboard.press("Control+Enter")
            page.wait_for_url(f"{base}{detail(poll.pk)}")
            page.keyboard.press("s")  # mark sensitive
            page.wait_for_url(f"{base}{detail(reported.pk)}")
            assert "I disagree with it" in page.inner_text("#content-main")
            page.keyboard.press("d")  # dismiss the report: the post stays
            page.wait_for_url(f"{base}{detail(image.pk)}")  # the quarantined one is still queued
            assert "Dismissed the reports" in page.inner_text("ul.messagelist")

            # The troll's public post is visible to another user before the suspension.
            status, feed = _api(base, "/api/v1/content/posts?author=troll", token)
            assert status == 200 and [p["title"] for p in feed["results"]] == ["Troll's public post"]
            page.fill("#pf-account-form textarea[name=reason]", "Posting shock images")
            page.click("#pf-account-form button[value=suspend]")
            page.wait_for_url(f"{base}{detail(image.pk)}")
            assert "Suspended the account" in page.inner_text("ul.messagelist")
            status, feed = _api(base, "/api/v1/content/posts?author=troll", token)
            assert status == 200 and feed["results"] == []
            status, body = _api(base, f"/api/v1/content/posts/{world['public'].pk}", token)
            assert (status, body["code"]) == (404, "not_found")
            status, body = _api(base, "/api/v1/content/me/posts", world["troll"].auth_token.key)
            assert (status, body["code"]) == (403, "account_suspended")
        finally:
            browser.close()

    # The screenshot shows the queue with the blurred thumbnail: a real PNG of the page.
    shot = Image.open(TRIAGE_SCREENSHOT)
    assert shot.format == "PNG" and shot.width == 1280 and shot.height >= 900
    # the blurred thumbnail (with its "click to show" label) has a fraction of the sharp one's contrast
    assert blurred * 3 < sharp and sharp > 90, (blurred, sharp)
    states = {
        p.pk: (p.status, p.sensitive) for p in Post.objects.filter(pk__in=[x.pk for x in world["order"]])
    }
    assert states == {
        text.pk: ("published", False),
        image.pk: ("quarantined", False),
        link.pk: ("rejected", False),
        poll.pk: ("published", True),
        reported.pk: ("published", False),
    }
    assert Post.objects.get(pk=link.pk).rejection_reason == "Spam link"
    assert Report.objects.get(post=reported).status == "dismissed"
    assert AccountStanding.objects.get(user=world["troll"]).status == "suspended"
