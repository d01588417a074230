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
from django.utils import timezone

from config import outbound
from content.locks import post_lock
from content.models import Post, PostRevision, PostStatus, PostType
from content.services import post_edit, revision_link_preview_done
from media.models import Media
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


def _fetch_card(link_url: str) -> tuple[Card | None, bytes | None, str, dict | None]:
    """Fetch the page and its image: (card, image bytes or None, image URL, error {code, detail})."""
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
        return None, None, "", {"code": exc.code, "detail": exc.detail}
    card = parse_card(page.body, page.url)
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
                return card, image.body, image.url, None
        except outbound.OutboundError as exc:
            logger.info("link preview image of %s refused: %s", link_url, exc.code)
    return card, None, "", None


def _card_fields(card: Card) -> dict:
    fields = asdict(card)
    fields.pop("image_url")
    return fields


def link_preview_build(*, post_id: str, link_url: str, revision: int | None = None) -> dict | None:
    """Fetch, parse and store the card of ``link_url`` for the post; returns the stored preview, or
    None (stale message, or the fetch failed: ``metadata.link_preview_error`` says why).

    ``revision``: the number of an edit of a published post that changed ``link_url``; the card and
    its image go to that revision (content.services.revision_link_preview_done), which waits for
    them and goes public with them only once cleared. Without it, a draft's card goes into the
    post's metadata; a card that arrives after the post was published goes public as text at once,
    and its image only through a new revision (prescreened in ``ai_prescreen``, public as soon as
    processed in ``reactive_only``)."""
    if revision is not None:
        return _build_for_revision(post_id=post_id, link_url=link_url, revision=revision)
    post = Post.objects.filter(pk=post_id, deleted_at__isnull=True).only("type", "link_url").first()
    if post is None or post.type != PostType.LINK or post.link_url != link_url or not link_url:
        return None
    card, image_bytes, image_url, error = _fetch_card(link_url)
    if card is None:
        logger.info("link preview of post %s refused: %s (%s)", post_id, error["code"], error["detail"])
        _store(post_id, link_url, link_preview=None, link_preview_error=error)
        return None
    preview = {**_card_fields(card), "image_media_id": None}
    with transaction.atomic():
        media = None
        if image_bytes is not None:
            media = media_attach_link_preview(post_id=post_id, data=image_bytes, source_url=image_url)
        fresh = Post.objects.filter(pk=post_id).select_related("pending_revision").first()
        if media is not None and fresh is not None and fresh.status == PostStatus.PUBLISHED:
            # Public already: the text goes up now; the image joins a new revision (prescreened in
            # ai_prescreen), never the public one directly. Not while an edit to another link waits.
            _store(post_id, link_url, link_preview=preview, link_preview_error=None)
            pending = fresh.pending_revision
            if pending is None or pending.link_url == link_url:
                post_edit(
                    post_id=post_id,
                    actor=media.owner,
                    attach_media_ids=[media.pk],
                    link_preview={**preview, "image_media_id": str(media.pk)},
                )
            else:
                Media.objects.filter(pk=media.pk).update(detached_at=timezone.now())
            return preview
        if media is not None:
            preview["image_media_id"] = str(media.pk)
        _store(post_id, link_url, link_preview=preview, link_preview_error=None)
    return preview


def _build_for_revision(*, post_id: str, link_url: str, revision: int) -> dict | None:
    rev = PostRevision.objects.filter(post_id=post_id, number=revision).first()
    if rev is None or rev.link_url != link_url or (rev.link_preview or {}).get("status") != "fetching":
        return None
    try:
        card, image_bytes, image_url, error = _fetch_card(link_url)
    except Exception as exc:  # noqa: BLE001 - the revision must not wait forever for its card
        logger.exception("link preview of post %s revision %s failed", post_id, revision)
        card, image_bytes, error = None, None, {"code": "preview_failed", "detail": type(exc).__name__}
    preview = {**_card_fields(card), "image_media_id": None} if card is not None else None
    with transaction.atomic():
        media = None
        if image_bytes is not None:
            media = media_attach_link_preview(
                post_id=post_id, data=image_bytes, source_url=image_url, revision=revision
            )
        revision_link_preview_done(
            post_id=post_id,
            revision=revision,
            card=preview,
            error=error,
            image_media_id=media.pk if media is not None else None,
        )
    return preview
