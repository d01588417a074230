"""The moderators' side of the admin (DESIGN.md §7): the review queue, its decisions, the AI accuracy
report, and the read-only records behind them. Every decision goes through ``moderation.services``."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.templatetags.static import static
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince

from config.admin import ReadOnlyAdmin, review_link
from config.errors import ServiceError
from content.models import Post, PostStatus
from media import storage
from media.live.models import LiveStream
from media.live.services import live_streams_now, livestream_end, livestream_json
from media.models import Media, MediaKind
from moderation import policy, services
from moderation.models import (
    AccountAction,
    AccountActionKind,
    AccountStanding,
    AccountStatus,
    AiReview,
    Appeal,
    AppealQueue,
    AppealStatus,
    BlockedMedia,
    ModeratedAccount,
    ModerationAction,
    ModerationDecision,
    ModeratorNote,
    PlatformSettings,
    PostClaim,
    ReviewQueue,
)
from moderation.platform import get_platform_settings, invalidate_platform_settings
from moderation.review import HEARD_SUFFIX
from moderation.selectors import (
    QUEUE_ITEM_KINDS,
    QUEUE_ORDERING,
    ai_accuracy,
    chip_labels,
    held_revision,
    in_queue,
    item_kinds_of,
    queue_aliases,
    queue_neighbours,
    queue_page,
    review_queue,
    revision_diff,
    should_blur,
    top_labels,
    with_review_annotations,
)

REVIEW_PERMISSION = "content.review_post"
ACCOUNT_PERMISSION = "moderation.act_on_account"
NOTE_PERMISSION = "moderation.add_moderatornote"
BULK_LIMIT = 500
CSS = "admin/postflow/postflow.css"
JS = "admin/postflow/postflow.js"
TRANSCRIPT_CSS = "admin/postflow/transcript.css"  # issue 17: transcripts with flagged passages
TRANSCRIPT_JS = "admin/postflow/transcript.js"  # click a cue to seek the player

# Decisions on a held edit of a published (or a scheduled) post act on that revision.
REVISION_DECISIONS = {
    "approve": services.post_revision_approve,
    "reject": services.post_revision_reject,
}

# op -> (service, statuses it may act on, past tense for messages)
DECISIONS = {
    "approve": (services.post_approve, services.APPROVE_FROM, "Approved"),
    "reject": (services.post_reject, services.REJECT_FROM, "Rejected"),
    "quarantine": (services.post_quarantine, services.QUARANTINE_FROM, "Quarantined"),
    "sensitive": (services.post_mark_sensitive, services.MARK_SENSITIVE_FROM, "Marked sensitive"),
}
# Keyboard shortcuts of the queue's pages (static/admin/postflow/postflow.js), documented on the page.
SHORTCUTS = (
    ("a", "approve"),
    ("r", "reject (asks for the reason first)"),
    ("q", "quarantine"),
    ("s", "mark sensitive (publish behind a content warning)"),
    ("d", "dismiss the open reports (the post stays)"),
    ("j / k", "next / previous item"),
    ("o or Enter", "open the highlighted item (list)"),
    ("u", "back to the list"),
    ("Ctrl+Enter", "in the reason box: submit the decision asked for"),
    ("Esc", "leave the reason box"),
)
ACCOUNT_ACTIONS = {
    AccountActionKind.WARN: "Warned",
    AccountActionKind.LIMIT: "Limited",
    AccountActionKind.SUSPEND: "Suspended",
    AccountActionKind.RESTORE: "Restored",
}
VIDEO_RENDITIONS = ("720p", "360p", "1080p")
IMAGE_VARIANTS = ("medium", "large", "small", "thumb")
BROWSER_IMAGES = ("image/jpeg", "image/png", "image/webp", "image/gif")


# --- helpers shared by the views --------------------------------------------------------------------------


def variant_url(media: Media, name: str, request: HttpRequest | None = None) -> str | None:
    """A signed URL for one variant. Private (served through Django, which checks the viewer) because
    queued posts are not public."""
    variant = (media.variants or {}).get(name)
    if not variant or not variant.get("key"):
        return None
    key = variant["key"]
    return storage.signed_url(
        key,
        media_id=media.pk,
        mime_type=variant.get("mime_type") or "application/octet-stream",
        filename=key.rsplit("/", 1)[-1],
        public=False,
        request=request,
    )


def first_variant_url(media: Media, names, request=None) -> str | None:
    for name in names:
        url = variant_url(media, name, request)
        if url:
            return url
    return None


def preview_url(post: Post) -> str | None:
    """The queue's thumbnail: the first image's ``thumb``, or a video's poster."""
    for media in getattr(post, "preview_media", []):
        names = ("thumb", "small") if media.kind == MediaKind.IMAGE else ("poster_thumb", "poster")
        url = first_variant_url(media, names)
        if url:
            return url
    return None


def waveform_path(peaks, width: int = 400, height: int = 48) -> tuple[str, int]:
    """An SVG path of vertical bars, one per peak (at most ``width`` bars), centred on the mid line;
    and how many bars it has, for the viewBox."""
    if not isinstance(peaks, list) or not peaks:
        return "", 0
    step = max(1, -(-len(peaks) // width))
    buckets = [max(peaks[i : i + step]) for i in range(0, len(peaks), step)]
    mid = height / 2
    parts = []
    for x, peak in enumerate(buckets):
        try:
            h = max(0.5, min(1.0, float(peak)) * mid)
        except (TypeError, ValueError):
            continue
        parts.append(f"M{x + 0.5} {mid - h:.1f}V{mid + h:.1f}")
    return "".join(parts), len(buckets)


def transcript_cue_scores(post: Post) -> dict[tuple[str, int], float]:
    """(transcript id, cue index) -> the AI's latest score of that cue, from the reviews' raw
    ``transcript_cues`` (the local provider scores each cue; a combined provider nests them)."""
    scores: dict[tuple[str, int], float] = {}
    for review in post.ai_reviews.exclude(raw={}).order_by("created_at"):
        raw = review.raw or {}
        nested = [v["raw"] for v in raw.values() if isinstance(v, dict) and isinstance(v.get("raw"), dict)]
        for source in (raw, *nested):
            for cue in source.get("transcript_cues") or []:
                try:
                    scores[(str(cue["media_id"]), int(cue["index"]))] = float(cue["score"])
                except (KeyError, TypeError, ValueError):
                    continue
    return scores


def transcript_item(transcript: Media, cue_scores: dict, request) -> dict:
    """What the review page shows of a transcript: its captions URL (a ``<track>`` for the player)
    and its cues, each with its score and flagged at or above ``ai_review_threshold``. A creator's
    edit held for review (``metadata.pending_edit``) is what is shown and decided on: approving the
    post publishes it (``moderation.services.post_approve``)."""
    threshold = get_platform_settings().ai_review_threshold
    pending = transcript.metadata.get("pending_edit") or {}
    segments = pending.get("segments") if pending else transcript.metadata.get("segments")

    def rows(segments, scores_id: str) -> list[dict]:
        cues = []
        for index, (start, end, text, *_) in enumerate(segments or []):
            score = cue_scores.get((scores_id, index))
            minutes, seconds = divmod(int(start), 60)
            cues.append(
                {
                    "start": round(float(start), 3),
                    "end": round(float(end), 3),
                    "label": f"{minutes}:{seconds:02d}",
                    "text": text,
                    "score": score,
                    "flagged": score is not None and score >= threshold,
                }
            )
        return cues

    cues = rows(segments, str(transcript.pk))
    # What the recogniser heard, when the creator's text differs from it (the prescreen scores both).
    heard_segments = transcript.metadata.get("speech_segments") or []
    heard = rows(heard_segments, f"{transcript.pk}{HEARD_SUFFIX}")
    if [c["text"] for c in heard] == [c["text"] for c in cues]:
        heard = []
    return {
        "transcript": transcript,
        "captions": variant_url(transcript, "captions", request),
        "captions_language": transcript.metadata.get("language") or "en",
        "cues": cues,
        "heard_cues": heard,
        "flagged_cues": sum(1 for cue in cues + heard if cue["flagged"]),
        "pending_edit": bool(pending),
    }


def active_claim(post: Post) -> PostClaim | None:
    try:
        claim = post.claim
    except ObjectDoesNotExist:
        return None
    return claim if claim and claim.expires_at > timezone.now() else None


def post_label(post: Post) -> str:
    return post.title or (post.body[:60] + ("…" if len(post.body) > 60 else "")) or f"{post.type} post"


def _standing(user) -> AccountStanding:
    """The user's standing (select_related as ``author__standing``), or an unsaved good one."""
    try:
        return user.standing
    except ObjectDoesNotExist:
        return AccountStanding(user=user)


def _as_int(value: str) -> int | None:
    return int(value) if str(value).isascii() and str(value).isdigit() and int(value) < 2**63 else None


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


# --- list filters -----------------------------------------------------------------------------------------


class QueueStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [
            (s.value, s.label)
            for s in (PostStatus.PENDING_REVIEW, PostStatus.QUARANTINED, PostStatus.PUBLISHED)
        ]

    def queryset(self, request, queryset):
        return queryset.filter(status=self.value()) if self.value() else queryset


class ItemKindFilter(admin.SimpleListFilter):
    """Filter by the registered queue item kinds (``moderation.selectors.QUEUE_ITEM_KINDS``)."""

    title = "item kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [(k.name, k.label) for k in QUEUE_ITEM_KINDS.values()]

    def queryset(self, request, queryset):
        kind = QUEUE_ITEM_KINDS.get(self.value() or "")
        return queryset.filter(kind.condition()) if kind else queryset


class ScoreBandFilter(admin.SimpleListFilter):
    title = "AI score band"
    parameter_name = "band"

    def lookups(self, request, model_admin):
        return policy.band_choices()

    def queryset(self, request, queryset):
        return policy.filter_by_band(queryset, self.value(), field="ai_score")


class ReportedFilter(admin.SimpleListFilter):
    """Posts with open reports (or none)."""

    title = "reported"
    parameter_name = "reported"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(report_count__gt=0)
        if self.value() == "no":
            return queryset.filter(report_count=0)
        return queryset


class ReviewQueueChangeList(ChangeList):
    """Filters, sorts and paginates on light rows; then loads what one page shows in one query."""

    def get_results(self, request):
        super().get_results(request)
        self.result_list = queue_page(self.result_list)


class AccuracyPeriodForm(forms.Form):
    """The report's period: GET ``from`` and ``to`` (dates, both included)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        date = forms.DateInput(attrs={"type": "date"})
        self.fields["from"] = forms.DateField(required=False, label="From", widget=date)
        self.fields["to"] = forms.DateField(required=False, label="To", widget=date)

    def clean(self):
        data = super().clean()
        if data.get("from") and data.get("to") and data["from"] > data["to"]:
            raise forms.ValidationError("“From” must not be after “To”.")
        return data


def act_on_account(request: HttpRequest, *, user_id: int, post_id=None) -> None:
    """Handle a POST of the account/notes forms (``op``: warn, limit, suspend, restore, note_post,
    note_account) through ``moderation.services``; the outcome goes to the messages."""
    op = request.POST.get("op", "")
    text = request.POST.get("reason", "").strip()
    try:
        if op in ACCOUNT_ACTIONS:
            if not request.user.has_perm(ACCOUNT_PERMISSION):
                raise PermissionDenied
            standing = services.account_act(
                user_id=user_id, moderator=request.user, action=op, reason=text, post_id=post_id
            )
            messages.success(
                request,
                f"{ACCOUNT_ACTIONS[op]} the account: it is now {standing.get_status_display().lower()} "
                f"({standing.strikes} strike{'s' if standing.strikes != 1 else ''}).",
            )
        elif op in ("note_post", "note_account"):
            if not request.user.has_perm(NOTE_PERMISSION):
                raise PermissionDenied
            services.note_add(
                author=request.user,
                text=request.POST.get("note", ""),
                post_id=post_id if op == "note_post" else None,
                user_id=user_id if op == "note_account" else None,
            )
            messages.success(request, "Note added.")
        else:
            messages.error(request, "Unknown action.")
    except ServiceError as exc:
        messages.error(request, exc.detail)


# --- the review queue -------------------------------------------------------------------------------------


@admin.register(ReviewQueue)
class ReviewQueueAdmin(ReadOnlyAdmin):  # decisions go through the decide view
    """Posts waiting for a human, oldest first. Read-only: decisions are buttons and actions that call
    the transition functions with the status the moderator saw."""

    list_display = (
        "preview",
        "headline",
        "author_history",
        "ai",
        "reports",
        "waiting",
        "claimed_by",
    )
    list_display_links = ("headline",)
    list_filter = (ItemKindFilter, QueueStatusFilter, "type", ScoreBandFilter, ReportedFilter)
    search_fields = ("author__username", "title", "body")
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts would run the score subqueries once per choice
    actions = (
        "approve_selected",
        "reject_selected",
        "quarantine_selected",
        "mark_sensitive_selected",
        "claim_selected",
        "release_selected",
    )
    detail_template = "admin/moderation/reviewqueue/detail.html"
    confirmation_template = "admin/moderation/reviewqueue/action_confirmation.html"
    accuracy_template = "admin/moderation/reviewqueue/accuracy.html"

    class Media:
        css = {"all": [CSS, TRANSCRIPT_CSS]}
        js = [JS, TRANSCRIPT_JS]

    # permissions: seeing the queue is ``view_reviewqueue``; deciding is ``content.review_post``.

    def has_review_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_active and request.user.has_perm(REVIEW_PERMISSION)

    def get_queryset(self, request):
        return review_queue(ReviewQueue)

    def get_ordering(self, request):
        return list(QUEUE_ORDERING)

    def get_changelist(self, request, **kwargs):
        return ReviewQueueChangeList

    def changelist_view(self, request, extra_context=None):
        live = [
            {
                "stream": s,
                "url": reverse("admin:moderation_reviewqueue_change", args=[s.post_id]),
            }
            for s in live_streams_now()
        ]
        return super().changelist_view(
            request,
            {
                "title": "Review queue",
                "subtitle": None,
                "shortcuts": SHORTCUTS,
                "live_streams": live,
                **(extra_context or {}),
            },
        )

    # columns

    @admin.display(description="")
    def preview(self, post):
        url = preview_url(post)
        if not url:
            return format_html('<span class="pf-nopreview">{}</span>', post.get_type_display())
        blur = should_blur(post)
        return format_html(
            '<span class="pf-blurbox{}" title="{}"><img class="pf-thumb" src="{}" alt="" loading="lazy"'
            ' width="64" height="64"></span>',
            " pf-blur" if blur else "",
            "Flagged or sensitive: click to show" if blur else "",
            url,
        )

    @admin.display(description="post")
    def headline(self, post):
        kinds = format_html_join(
            " ",
            '<span class="pf-kind pf-kind-{}">{}</span>',
            ((k.name, k.label) for k in item_kinds_of(post) if k.badge),
        )
        sensitive = (
            mark_safe(' <span class="pf-badge pf-sensitive">sensitive</span>') if post.sensitive else ""
        )
        edit = (
            format_html(' · <span class="pf-badge pf-edit">edit #{}</span>', post.pending_revision.number)
            if (held_revision(post))
            else ""
        )
        return format_html(
            '<span class="pf-row" data-pf-url="{}">{}</span><br><small>{} · '
            '<span class="pf-badge pf-{}">{}</span>{}{} {}</small>',
            reverse("admin:moderation_reviewqueue_change", args=[post.pk]),
            post_label(post),
            post.get_type_display(),
            post.status,
            post.get_status_display(),
            edit,
            sensitive,
            kinds,
        )

    @admin.display(description="author")
    def author_history(self, post):
        url = reverse("admin:moderation_moderatedaccount_change", args=[post.author_id])
        standing = _standing(post.author)
        return format_html(
            '<a href="{}">{}</a><br><small>{} post{}, <span class="{}">{} rejected</span>, '
            '<span class="pf-strikes{}">{} strike{}</span>{}</small>',
            url,
            post.author.get_username(),
            post.author_posts,
            "" if post.author_posts == 1 else "s",
            "pf-warn" if post.author_rejected else "",
            post.author_rejected,
            " pf-warn" if standing.strikes else "",
            standing.strikes,
            "" if standing.strikes == 1 else "s",
            format_html(' <span class="pf-badge pf-account-{}">{}</span>', standing.status, standing.status)
            if standing.status != AccountStatus.GOOD
            else "",
        )

    @admin.display(description="AI", ordering="ai_score")
    def ai(self, post):
        if post.ai_score is None:
            label = "error" if post.ai_decision == "error" else "—"
            return format_html('<span class="pf-score pf-none">{}</span>', label)
        labels = format_html_join(
            " ",
            '<span class="pf-label" title="{}">{}</span>',
            ((f"{score:.2f}" if score is not None else "", name) for name, score in chip_labels(post)),
        )
        return format_html(
            '<span class="pf-score pf-{}">{}</span> {}',
            policy.band_for(post.ai_score),
            f"{post.ai_score:.2f}",
            labels,
        )

    @admin.display(description="open reports", ordering="report_count")
    def reports(self, post):
        if post.reports_total > post.report_count:
            return format_html(
                "{} <small>({} closed)</small>", post.report_count, post.reports_total - post.report_count
            )
        return post.report_count

    @admin.display(description="waiting", ordering="waiting_since")
    def waiting(self, post):
        return timesince(post.waiting_since)

    @admin.display(description="claimed by")
    def claimed_by(self, post):
        claim = active_claim(post)
        return claim.moderator.get_username() if claim else ""

    # urls

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        own = [
            path(
                "accuracy/",
                self.admin_site.admin_view(self.accuracy_view),
                name="{}_{}_accuracy".format(*info),
            ),
            path(
                "<path:object_id>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="{}_{}_decide".format(*info),
            ),
            path(
                "<path:object_id>/act/",
                self.admin_site.admin_view(self.act_view),
                name="{}_{}_act".format(*info),
            ),
        ]
        return own + super().get_urls()

    # the detail page

    def _load_post(self, object_id) -> Post | None:
        pk = _as_uuid(object_id)
        if pk is None:
            return None
        qs = with_review_annotations(Post.objects.alive().filter(pk=pk)).select_related(
            "poll", "public_revision"
        )
        return qs.first()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        post = self._load_post(object_id)
        if post is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, post):
            raise PermissionDenied
        claim = active_claim(post)
        can_review = self.has_review_permission(request)
        poll = getattr(post, "poll", None) if post.type == "poll" else None
        prev_item, next_item = queue_neighbours(post)
        queued_now = any(item_kinds_of(post))
        allowed = self._allowed(post)
        if post.status == PostStatus.PUBLISHED:
            # A reported post: marking it sensitive is a decision on it (not on a held edit's revision).
            allowed["sensitive"] = (
                bool(getattr(post, "is_reported", False))
                and not post.sensitive
                and held_revision(post) is None
            )
        allowed["dismiss"] = post.report_count > 0
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": post_label(post),
            "subtitle": None,
            "post": post,
            "media_items": self._media_items(post, request),
            "blur": should_blur(post),
            "poll": poll,
            "poll_options": list(poll.options.all()) if poll else [],
            "ai_reviews": [
                {"review": r, "scores": top_labels(None, r.scores, n=50)} for r in post.ai_reviews.all()
            ],
            "reports_list": post.reports.select_related("reporter", "resolved_by"),
            "decisions": post.decisions.select_related("moderator"),
            "score_band": policy.band_for(post.ai_score),
            "top_labels": chip_labels(post, n=5),
            "item_kinds": item_kinds_of(post),
            "claim": claim,
            "claimed_by_other": bool(claim and claim.moderator_id != request.user.pk),
            "claimed_by_me": bool(claim and claim.moderator_id == request.user.pk),
            "can_review": can_review,
            "can_act_on_account": request.user.has_perm(ACCOUNT_PERMISSION),
            "can_note": request.user.has_perm(NOTE_PERMISSION),
            "own_post": post.author_id == request.user.pk,
            "allowed": allowed,
            "in_queue": queued_now,
            "held_revision": held_revision(post),
            "revision_diff": revision_diff(post),
            "standing": _standing(post.author),
            "account_actions": list(ACCOUNT_ACTIONS),
            "account_url": reverse("admin:moderation_moderatedaccount_change", args=[post.author_id]),
            "post_notes": ModeratorNote.objects.filter(post=post).select_related("author"),
            "account_notes": ModeratorNote.objects.filter(user_id=post.author_id).select_related("author")[
                :20
            ],
            "prev_url": reverse("admin:moderation_reviewqueue_change", args=[prev_item.pk])
            if prev_item
            else "",
            "next_url": reverse("admin:moderation_reviewqueue_change", args=[next_item.pk])
            if next_item
            else "",
            "list_url": reverse("admin:moderation_reviewqueue_changelist"),
            "shortcuts": SHORTCUTS,
            "decide_url": reverse("admin:moderation_reviewqueue_decide", args=[post.pk]),
            "act_url": reverse("admin:moderation_reviewqueue_act", args=[post.pk]),
            "livestream": self._livestream(post, request),
            "post_admin_url": reverse("admin:content_post_change", args=[post.pk]),
            "preserved_filters": self.get_preserved_filters(request),
            "has_view_permission": True,
            "media": self.media,
        }
        context.update(extra_context or {})
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.detail_template, context)

    @staticmethod
    def _livestream(post: Post, request) -> dict | None:
        """The stream of a livestream post for the detail page: its state and a player URL issued to
        this moderator (staff may see the live tree of a hidden post; the grant is checked per request)."""
        if post.type != "livestream":
            return None
        stream = LiveStream.objects.filter(post=post).first()
        if stream is None:
            return None
        data = livestream_json(post, request) or {}
        return {
            "stream": stream,
            "playback_url": data.get("playback_url"),
            "can_end": stream.status in ("idle", "live"),
            "hls_js": static("vendor/hls.min.js"),
        }

    @staticmethod
    def _allowed(post: Post) -> dict[str, bool]:
        if held_revision(post) is not None:
            return {op: op in REVISION_DECISIONS or post.status in DECISIONS[op][1] for op in DECISIONS}
        return {op: post.status in allowed for op, (_, allowed, _) in DECISIONS.items()}

    def _media_items(self, post: Post, request) -> list[dict]:
        items = []
        attached = list(post.media.attached().order_by("-is_primary", "position", "created_at"))
        transcripts = {m.parent_id: m for m in attached if m.kind == MediaKind.TRANSCRIPT}
        cue_scores = transcript_cue_scores(post)
        for media in attached:
            if media.kind == MediaKind.TRANSCRIPT and media.parent_id in {m.pk for m in attached}:
                continue  # shown with its audio or video
            item = {
                "media": media,
                "admin_url": reverse("admin:media_media_change", args=[media.pk]),
                "runs_url": reverse("admin:media_processorrun_changelist") + f"?media__id__exact={media.pk}",
            }
            if media.kind in (MediaKind.IMAGE, MediaKind.THUMBNAIL):
                url = first_variant_url(media, IMAGE_VARIANTS, request)
                if url is None and media.mime_type in BROWSER_IMAGES and media.original_key:
                    url = storage.signed_url(
                        media.original_key,
                        media_id=media.pk,
                        mime_type=media.mime_type,
                        filename=media.original_filename or "original",
                        public=False,
                        request=request,
                    )
                item["image"] = url
            elif media.kind in (MediaKind.VIDEO, MediaKind.LIVESTREAM_RECORDING):
                item["video"] = first_variant_url(media, VIDEO_RENDITIONS, request)
                item["poster"] = first_variant_url(media, ("poster", "poster_thumb"), request)
            elif media.kind == MediaKind.AUDIO:
                item["audio"] = variant_url(media, "m4a", request)
                item["waveform"], item["waveform_width"] = waveform_path(
                    (media.metadata or {}).get("waveform")
                )
            if media.pk in transcripts:
                item.update(transcript_item(transcripts[media.pk], cue_scores, request))
            items.append(item)
        return items

    # single decisions (buttons on the detail page)

    def _next_url(self, post: Post, candidate: Post | None) -> str:
        """Decide-and-next: the item after the decided one if it is still queued, else the queue's
        first item, else the list."""
        if candidate is not None and in_queue(candidate):
            return reverse("admin:moderation_reviewqueue_change", args=[candidate.pk])
        first = review_queue().exclude(pk=post.pk).only("pk").first()
        if first is not None:
            return reverse("admin:moderation_reviewqueue_change", args=[first.pk])
        return reverse("admin:moderation_reviewqueue_changelist")

    def decide_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """One decision from the detail page (buttons or keyboard); after it the moderator lands on the
        next queue item (decide-and-next)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_review_permission(request):
            raise PermissionDenied
        pk = _as_uuid(object_id)
        post = get_object_or_404(Post.objects.alive(), pk=pk) if pk else None
        if post is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        detail_url = reverse("admin:moderation_reviewqueue_change", args=[post.pk])
        op = request.POST.get("op", "")
        take_over = request.POST.get("take_over") == "1"
        reason = request.POST.get("reason", "").strip()
        label = post_label(post)
        try:
            revision_id = request.POST.get("revision_id", "")
            if op in REVISION_DECISIONS and revision_id.isdigit():
                _, next_item = queue_neighbours(post)
                revision = REVISION_DECISIONS[op](
                    post_id=post.pk,
                    revision_id=int(revision_id),
                    moderator=request.user,
                    reason=reason,
                    take_over=take_over,
                )
                done = DECISIONS[op][2]
                messages.success(request, f"{done} edit #{revision.number} of “{label}”.")
                return HttpResponseRedirect(self._next_url(post, next_item))
            if op in DECISIONS or op == "dismiss":
                _, next_item = queue_neighbours(post)
                if op == "dismiss":
                    post = services.reports_dismiss(post_id=post.pk, moderator=request.user, note=reason)
                    messages.success(request, f"Dismissed the reports on “{label}”: it stays {post.status}.")
                else:
                    service, _, done = DECISIONS[op]
                    extra = (
                        {"spoiler_text": request.POST.get("spoiler_text", "")} if op == "sensitive" else {}
                    )
                    post = service(
                        post_id=post.pk,
                        moderator=request.user,
                        reason=reason,
                        expected_status=request.POST.get("expected_status") or None,
                        take_over=take_over,
                        **extra,
                    )
                    messages.success(
                        request, f"{done} “{label}”: it is now {post.get_status_display().lower()}."
                    )
                return HttpResponseRedirect(self._next_url(post, next_item))
            if op == "end_livestream":
                livestream_end(
                    post_id=post.pk,
                    actor=request.user,
                    reason=request.POST.get("reason", "").strip() or "ended by a moderator",
                )
                messages.success(request, f"Ended the livestream of “{label}”; its recording follows.")
                return HttpResponseRedirect(detail_url)
            if op in ("claim", "take_over"):
                claim = services.post_claim(
                    post_id=post.pk, moderator=request.user, take_over=op == "take_over"
                )
                messages.success(request, f"You hold “{label}” until {claim.expires_at:%H:%M} UTC.")
            elif op == "release":
                services.post_release_claim(post_id=post.pk, moderator=request.user)
                messages.success(request, f"Released your claim on “{label}”.")
            else:
                messages.error(request, "Unknown action.")
        except ServiceError as exc:
            messages.error(request, exc.detail)
        return HttpResponseRedirect(detail_url)

    def act_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Account actions on the post's author and internal notes, from the post's page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        pk = _as_uuid(object_id)
        post = get_object_or_404(Post.objects.alive(), pk=pk) if pk else None
        if post is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        act_on_account(request, user_id=post.author_id, post_id=post.pk)
        return HttpResponseRedirect(reverse("admin:moderation_reviewqueue_change", args=[post.pk]))

    # bulk decisions (changelist actions, confirmed on an intermediate page)

    def _bulk(self, request, queryset, op: str, *, title: str):
        needs_reason = op in policy.REASON_REQUIRED
        if not self.has_review_permission(request):
            raise PermissionDenied
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if selected and request.POST.get("select_across") != "1":
            ids = [pk for pk in map(_as_uuid, selected) if pk]
            posts = queue_page(
                queue_aliases(ReviewQueue.objects.alive().filter(pk__in=ids)).order_by(*QUEUE_ORDERING)
            )
        else:
            posts = queue_page(queryset[: BULK_LIMIT + 1])
        if len(posts) > BULK_LIMIT:
            messages.warning(request, f"Only the first {BULK_LIMIT} posts are taken; run the action again.")
            posts = posts[:BULK_LIMIT]
        reason = request.POST.get("reason", "").strip()
        take_over = request.POST.get("take_over") == "1"

        if request.POST.get("confirm") == "yes" and not (needs_reason and not reason):
            self._apply_bulk(request, posts, op, reason=reason, take_over=take_over)
            return None
        if request.POST.get("confirm") == "yes":
            messages.error(request, "Give the creators a reason for the rejection.")
        decided = [p for p in posts if not in_queue(p)]
        for p in posts:
            p.active_claim = active_claim(p)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "subtitle": None,
            "op": op,
            "action": f"{op}_selected",
            "posts": [p for p in posts if in_queue(p)],
            "decided": decided,
            "needs_reason": needs_reason,
            "reason": reason,
            "is_decision": op in DECISIONS,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.confirmation_template, context)

    def _apply_bulk(self, request, posts: list[Post], op: str, *, reason: str, take_over: bool) -> None:
        done, failed = 0, []
        for post in posts:
            expected = request.POST.get(f"expected_{post.pk}") or post.status
            try:
                held = held_revision(post)
                if held is not None and op in REVISION_DECISIONS:
                    REVISION_DECISIONS[op](
                        post_id=post.pk,
                        revision_id=held.pk,
                        moderator=request.user,
                        reason=reason,
                        take_over=take_over,
                    )
                elif op in DECISIONS:
                    DECISIONS[op][0](
                        post_id=post.pk,
                        moderator=request.user,
                        reason=reason,
                        expected_status=expected,
                        take_over=take_over,
                    )
                elif op == "claim":
                    services.post_claim(post_id=post.pk, moderator=request.user, take_over=take_over)
                elif op == "release":
                    services.post_release_claim(post_id=post.pk, moderator=request.user)
                done += 1
            except ServiceError as exc:
                failed.append(f"“{post_label(post)}”: {exc.detail}")
        verb = {
            "approve": "Approved",
            "reject": "Rejected",
            "quarantine": "Quarantined",
            "sensitive": "Marked sensitive",
            "claim": "Claimed",
        }.get(op, "Released")
        if done:
            messages.success(request, f"{verb} {done} post{'s' if done != 1 else ''}.")
        for message in failed:
            messages.error(request, message)

    @admin.action(description="Approve selected posts (publish)", permissions=["review"])
    def approve_selected(self, request, queryset):
        return self._bulk(request, queryset, "approve", title="Approve these posts?")

    @admin.action(description="Reject selected posts…", permissions=["review"])
    def reject_selected(self, request, queryset):
        return self._bulk(request, queryset, "reject", title="Reject these posts?")

    @admin.action(description="Quarantine selected posts", permissions=["review"])
    def quarantine_selected(self, request, queryset):
        return self._bulk(request, queryset, "quarantine", title="Quarantine these posts?")

    @admin.action(
        description="Mark selected posts sensitive (publish behind a warning)", permissions=["review"]
    )
    def mark_sensitive_selected(self, request, queryset):
        return self._bulk(request, queryset, "sensitive", title="Mark these posts sensitive?")

    @admin.action(description="Claim selected posts", permissions=["review"])
    def claim_selected(self, request, queryset):
        return self._bulk(request, queryset, "claim", title="Claim these posts?")

    @admin.action(description="Release my claims on selected posts", permissions=["review"])
    def release_selected(self, request, queryset):
        return self._bulk(request, queryset, "release", title="Release your claims on these posts?")

    # the AI accuracy report

    def accuracy_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        today = timezone.localdate()
        form = AccuracyPeriodForm(request.GET or None)
        start_day, end_day = today - timedelta(days=30), today
        if form.is_bound and form.is_valid():
            start_day = form.cleaned_data["from"] or start_day
            end_day = form.cleaned_data["to"] or end_day
        elif not form.is_bound:
            form = AccuracyPeriodForm(initial={"from": start_day, "to": end_day})
        tz = timezone.get_current_timezone()
        start = datetime.combine(start_day, time.min, tzinfo=tz)
        end = datetime.combine(end_day + timedelta(days=1), time.min, tzinfo=tz)
        ps = get_platform_settings()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "AI accuracy",
            "subtitle": None,
            "form": form,
            "start_day": start_day,
            "end_day": end_day,
            "report": ai_accuracy(start=start, end=end),
            "review_threshold": ps.ai_review_threshold,
            "revoke_threshold": ps.ai_revoke_threshold,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.accuracy_template, context)


# --- records behind the queue (read-only) -----------------------------------------------------------------


@admin.register(AiReview)
class AiReviewAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "post_link", "provider", "model", "overall_score", "decision", "error")
    list_filter = ("decision", "provider")
    search_fields = ("post__id", "model")
    list_select_related = ("post",)
    show_full_result_count = False

    @admin.display(description="post")
    def post_link(self, obj):
        return review_link(obj.post_id)


@admin.register(ModerationDecision)
class ModerationDecisionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "action", "post_link", "moderator", "from_status", "to_status", "reason")
    list_filter = ("action",)
    search_fields = ("post__id", "moderator__username", "reason")
    list_select_related = ("moderator",)
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="post")
    def post_link(self, obj):
        return review_link(obj.post_id)


@admin.register(BlockedMedia)
class BlockedMediaAdmin(admin.ModelAdmin):
    """Moderators may add and edit entries (view/add/change); deleting is for superusers."""

    list_display = ("sha256", "reason", "source_post", "added_by", "created_at")
    search_fields = ("sha256", "reason")
    list_select_related = ("source_post", "added_by")
    fields = ("sha256", "reason", "source_post", "added_by", "created_at")
    readonly_fields = ("added_by", "created_at")
    raw_id_fields = ("source_post",)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.added_by = request.user
        super().save_model(request, obj, form, change)


# --- platform settings (superusers only, audited) ---------------------------------------------------------


@admin.register(PlatformSettings)
class PlatformSettingsAdmin(admin.ModelAdmin):
    """Superusers only; every change is audited."""

    list_display = (
        "__str__",
        "moderation_mode",
        "ai_review_threshold",
        "ai_revoke_threshold",
        "report_threshold",
        "post_processing_enabled",
        "updated_at",
        "updated_by",
    )
    readonly_fields = ("updated_at", "updated_by")

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    has_change_permission = has_view_permission

    def has_add_permission(self, request):
        return request.user.is_superuser and not PlatformSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
        invalidate_platform_settings()
        ModerationDecision.objects.create(
            post=None,
            moderator=request.user,
            action=ModerationAction.SETTINGS,
            reason="Platform settings changed",
            details={f: str(form.cleaned_data.get(f)) for f in form.changed_data},
        )


# --- accounts: standing, actions, notes -------------------------------------------------------------------


class AccountStatusFilter(admin.SimpleListFilter):
    title = "standing"
    parameter_name = "standing"

    def lookups(self, request, model_admin):
        return AccountStatus.choices

    def queryset(self, request, queryset):
        if self.value() == AccountStatus.GOOD:
            return queryset.exclude(standing__status__in=[AccountStatus.LIMITED, AccountStatus.SUSPENDED])
        if self.value() in AccountStatus.values:
            return queryset.filter(standing__status=self.value())
        return queryset


@admin.register(ModeratedAccount)
class ModeratedAccountAdmin(ReadOnlyAdmin):
    """Accounts as moderators see them: standing, strikes, notes, the account's audit and posts; warn,
    limit, suspend and restore go through ``moderation.services.account_act``."""

    list_display = ("username", "account_status", "account_strikes", "date_joined", "is_staff")
    list_filter = (AccountStatusFilter,)
    search_fields = ("username", "email")
    list_select_related = ("standing",)
    ordering = ("-date_joined",)
    show_full_result_count = False
    detail_template = "admin/moderation/moderatedaccount/detail.html"

    class Media:
        css = {"all": [CSS]}
        js = [JS]

    @admin.display(description="standing")
    def account_status(self, user):
        return _standing(user).get_status_display()

    @admin.display(description="strikes")
    def account_strikes(self, user):
        return _standing(user).strikes

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        own = [
            path(
                "<path:object_id>/act/",
                self.admin_site.admin_view(self.act_view),
                name="{}_{}_act".format(*info),
            )
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        user = ModeratedAccount.objects.select_related("standing").filter(pk=_as_int(object_id)).first()
        if user is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, user):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Account {user.get_username()}",
            "subtitle": None,
            "account": user,
            "standing": _standing(user),
            "account_actions": list(ACCOUNT_ACTIONS),
            "can_act_on_account": request.user.has_perm(ACCOUNT_PERMISSION),
            "can_note": request.user.has_perm(NOTE_PERMISSION),
            "notes": ModeratorNote.objects.filter(user=user).select_related("author"),
            "audit": AccountAction.objects.filter(user=user).select_related("moderator", "post")[:100],
            "posts": Post.objects.filter(author=user).order_by("-created_at")[:50],
            "act_url": reverse("admin:moderation_moderatedaccount_act", args=[user.pk]),
            "has_view_permission": True,
            "media": self.media,
        }
        context.update(extra_context or {})
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.detail_template, context)

    def act_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        user = get_object_or_404(ModeratedAccount, pk=_as_int(object_id))
        act_on_account(request, user_id=user.pk)
        return HttpResponseRedirect(reverse("admin:moderation_moderatedaccount_change", args=[user.pk]))


@admin.register(AccountAction)
class AccountActionAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "action",
        "user",
        "moderator",
        "from_status",
        "to_status",
        "strikes",
        "reason",
    )
    list_filter = ("action",)
    search_fields = ("user__username", "moderator__username", "reason")
    list_select_related = ("user", "moderator")
    show_full_result_count = False


# --- the pipeline dashboard (kept apart from the queue: a view on the admin site itself) -------------------

DASHBOARD_PERMISSION = "media.view_processorrun"  # operators' run logs; the Moderators group has it


def pipeline_dashboard_view(request: HttpRequest) -> HttpResponse:
    """Charts of throughput, latency, failures, queue depth, AI bands and decision latency
    (``moderation.dashboard``). Staff with ``media.view_processorrun`` (superusers, Moderators)."""
    from moderation import dashboard

    if not request.user.has_perm(DASHBOARD_PERMISSION):
        raise PermissionDenied
    context = {
        **admin.site.each_context(request),
        "title": "Pipeline dashboard",
        "subtitle": None,
        "charts": dashboard.all_charts(),
    }
    return TemplateResponse(request, "admin/pipeline_dashboard.html", context)


_site_get_urls = admin.site.get_urls


def _site_urls():
    own = [path("pipeline/", admin.site.admin_view(pipeline_dashboard_view), name="pipeline_dashboard")]
    return own + _site_get_urls()


admin.site.get_urls = _site_urls


# --- the Appeals queue (DESIGN.md §10) ---------------------------------------------------------------------


@admin.register(AppealQueue)
class AppealQueueAdmin(ReadOnlyAdmin):
    """Open appeals, oldest first: the original decision (action, reason, moderator or the AI's
    scores), the appeal's text, and grant / deny with a reason (``services.appeal_decide``)."""

    list_display = ("created_at", "post_link", "author", "original", "original_reason", "original_by", "text")
    list_select_related = ("author", "decision", "decision__moderator", "ai_review")
    ordering = ("created_at", "pk")
    decide_template = "admin/moderation/appealqueue/decide.html"
    show_full_result_count = False

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.has_perm(REVIEW_PERMISSION)

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def get_queryset(self, request):
        return super().get_queryset(request).filter(status=AppealStatus.OPEN)

    @admin.display(description="post")
    def post_link(self, appeal):
        return review_link(appeal.post_id, "review page")

    @admin.display(description="original decision")
    def original(self, appeal):
        if appeal.decision_id:
            return f"{appeal.decision.get_action_display()} (human)"
        return f"Quarantine (AI, score {appeal.ai_review.overall_score})"

    @admin.display(description="its reason")
    def original_reason(self, appeal):
        if appeal.decision_id:
            return appeal.decision.reason
        return ", ".join(appeal.ai_review.labels or []) or "—"

    @admin.display(description="decided by")
    def original_by(self, appeal):
        if appeal.decision_id:
            return appeal.decision.moderator or "—"
        return f"AI ({appeal.ai_review.provider})"

    def get_urls(self):
        return [
            path(
                "<int:appeal_id>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="moderation_appealqueue_decide",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:moderation_appealqueue_decide", args=[object_id]))

    def decide_view(self, request: HttpRequest, appeal_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        appeal = get_object_or_404(
            Appeal.objects.select_related("post", "author", "decision__moderator", "ai_review", "decided_by"),
            pk=appeal_id,
        )
        if request.method == "POST":
            op = request.POST.get("op")
            if op not in ("grant", "deny"):
                messages.error(request, "Choose grant or deny.")
            else:
                try:
                    services.appeal_decide(
                        appeal_id=appeal.pk,
                        moderator=request.user,
                        grant=op == "grant",
                        reason=request.POST.get("reason", ""),
                    )
                except ServiceError as exc:
                    messages.error(request, exc.detail)
                else:
                    messages.success(request, f"Appeal {'granted' if op == 'grant' else 'denied'}.")
                    return HttpResponseRedirect(reverse("admin:moderation_appealqueue_changelist"))
        ai = appeal.ai_review or AiReview.objects.filter(post=appeal.post).order_by("-created_at").first()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Appeal {appeal.pk}",
            "appeal": appeal,
            "original": self.original(appeal),
            "original_reason": self.original_reason(appeal),
            "original_by": self.original_by(appeal),
            "original_at": appeal.decision.created_at if appeal.decision_id else appeal.ai_review.created_at,
            "ai": ai,
            "ai_scores": sorted((ai.scores or {}).items(), key=lambda kv: -kv[1]) if ai else [],
            "own_decision": appeal.decision_id
            and appeal.decision.moderator_id == request.user.pk
            and not request.user.is_superuser,
        }
        return TemplateResponse(request, self.decide_template, context)
