"""Link preview cards (DESIGN §9): fetch a link post's page through the guarded client, read its
OpenGraph / Twitter card / ``<title>`` tags, and store ``metadata.link_preview``.

Runs in the ``link_preview_fetch`` actor (content/tasks.py, queue ``links``), sent on commit when a
link post is created or its draft's ``link_url`` changes. The page fetch has a 5 s budget, a 1 MiB
cap, HTML only, at most 3 redirects, each re-checked by config.outbound's SSRF guard. The preview
image (``og:image`` / ``twitter:image``) is fetched the same way and attached as a non-primary
``thumbnail`` medium (media.services.media_attach_link_preview): processed by the image pipeline and
prescreened with the post, visible only as the post is. A preview never blocks publishing: failures
are recorded in ``metadata.link_preview_error`` (owner and staff only), and a preview image that is
not ready when the post is published is dropped (content.services).
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from urllib.parse import urljoin, urlsplit

import lxml.etree
import lxml.html
from django.db import transaction

from config import outbound
from content.locks import post_lock
from content.models import Post, PostType
from media.services import media_attach_link_preview

logger = logging.getLogger("postflow.linkpreview")

PAGE_TIMEOUT_SECONDS = 5.0
PAGE_MAX_BYTES = 1 << 20
MAX_REDIRECTS = 3
HTML_TYPES = ("text/html", "application/xhtml+xml")
IMAGE_TIMEOUT_SECONDS = 5.0
IMAGE_MAX_BYTES = 5 << 20
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
LIMITS = {"title": 300, "description": 1000, "site_name": 200}


@dataclass(frozen=True)
class Card:
    url: str
    title: str
    description: str
    site_name: str
    image_url: str


def _clean(text: str | None, limit: int) -> str:
    text = re.sub(r"\s+", " ", text or "").strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def parse_card(html: bytes, page_url: str) -> Card:
    """The card of an HTML page: OpenGraph first, then Twitter card tags, then ``<title>`` and
    ``<meta name=description>``. Relative image URLs are resolved against ``page_url``; only http(s)
    image URLs are kept. Never raises on bad HTML (an empty card instead)."""
    metas: dict[str, str] = {}
    title_tag = ""
    try:
        doc = lxml.html.document_fromstring(html)
    except (lxml.etree.ParserError, ValueError):
        doc = None
    if doc is not None:
        for el in doc.iter("meta"):
            name = (el.get("property") or el.get("name") or "").strip().lower()
            content = el.get("content")
            if name and content is not None and name not in metas:
                metas[name] = content
        title_el = doc.find(".//title")
        title_tag = title_el.text_content() if title_el is not None else ""

    def first(*names: str) -> str:
        return next((metas[n] for n in names if metas.get(n, "").strip()), "")

    image = first("og:image:secure_url", "og:image", "og:image:url", "twitter:image", "twitter:image:src")
    image_url = urljoin(page_url, image.strip()) if image else ""
    if urlsplit(image_url).scheme not in ("http", "https"):
        image_url = ""
    return Card(
        url=page_url,
        title=_clean(first("og:title", "twitter:title") or title_tag, LIMITS["title"]),
        description=_clean(
            first("og:description", "twitter:description", "description"), LIMITS["description"]
        ),
        site_name=_clean(
            first("og:site_name", "application-name") or urlsplit(page_url).hostname, LIMITS["site_name"]
        ),
        image_url=image_url[:2000],
    )


def _store(post_id: str, link_url: str, **metadata) -> bool:
    """Write the preview keys into the post's metadata if the post still links ``link_url``."""
    with transaction.atomic():
        try:
            post = post_lock(post_id=post_id)
        except Exception:  # noqa: BLE001 - gone or deleted: nothing to do
            return False
        if post.link_url != link_url:
            return False
        data = dict(post.metadata or {})
        for key, value in metadata.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        post.metadata = data
        post.save(update_fields=["metadata", "updated_at"])
        return True


def link_preview_build(*, post_id: str, link_url: str) -> dict | None:
    """Fetch, parse and store the card of ``link_url`` for the post; returns the stored preview, or
    None (stale message, or the fetch failed: ``metadata.link_preview_error`` says why)."""
    post = Post.objects.filter(pk=post_id, deleted_at__isnull=True).only("type", "link_url").first()
    if post is None or post.type != PostType.LINK or post.link_url != link_url or not link_url:
        return None
    try:
        page = outbound.fetch(
            link_url,
            timeout=PAGE_TIMEOUT_SECONDS,
            max_bytes=PAGE_MAX_BYTES,
            max_redirects=MAX_REDIRECTS,
            allowed_content_types=HTML_TYPES,
        )
        if page.status != 200:
            raise outbound.OutboundError("http_error", f"The page answered HTTP {page.status}.")
    except outbound.OutboundError as exc:
        logger.info("link preview of post %s refused: %s (%s)", post_id, exc.code, exc.detail)
        _store(
            post_id, link_url, link_preview=None, link_preview_error={"code": exc.code, "detail": exc.detail}
        )
        return None
    card = parse_card(page.body, page.url)
    image_id = None
    if card.image_url:
        try:
            image = outbound.fetch(
                card.image_url,
                timeout=IMAGE_TIMEOUT_SECONDS,
                max_bytes=IMAGE_MAX_BYTES,
                max_redirects=MAX_REDIRECTS,
                allowed_content_types=IMAGE_TYPES,
            )
            if image.status == 200:
                media = media_attach_link_preview(post_id=post_id, data=image.body, source_url=image.url)
                image_id = str(media.pk) if media is not None else None
        except outbound.OutboundError as exc:
            logger.info("link preview image of post %s refused: %s", post_id, exc.code)
    fields = asdict(card)
    fields.pop("image_url")
    preview = {**fields, "image_media_id": image_id}
    _store(post_id, link_url, link_preview=preview, link_preview_error=None)
    return preview
