from __future__ import annotations

import re

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from content.models import Poll, Post, PostRevision, PostStatus, PostType, ReportReason
from content.selectors import public_media
from content.services import is_owner_or_staff
from media.api.serializers import MediaSerializer
from media.live.services import livestream_json

User = get_user_model()


USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{3,150}")
USERNAME_TAKEN = "This username is taken."


def username_taken(username: str) -> bool:
    """True when ``username`` (already NFKC-normalised) matches an existing account ignoring case.

    New names are ASCII (``USERNAME_PATTERN``), where ``iexact`` is exact case-folding; accounts made
    before that rule (or in the admin) may hold non-ASCII names whose case fold is ASCII (``Straße`` is
    ``strasse``), so those few are compared in Python with ``str.casefold``.
    """
    if User.objects.filter(username__iexact=username).exists():
        return True
    folded = username.casefold()
    legacy = User.objects.exclude(username__regex=r"^[A-Za-z0-9_.@+-]*$").values_list("username", flat=True)
    return any(User.normalize_username(name).casefold() == folded for name in legacy.iterator())


class RegisterSerializer(serializers.Serializer):
    username = serializers.CharField(
        max_length=150,
        help_text="3–150 ASCII letters, digits, `_`, `.` and `-`; unique ignoring case.",
    )
    password = serializers.CharField(write_only=True, max_length=128, style={"input_type": "password"})
    email = serializers.EmailField(required=False, allow_blank=True, default="")

    def validate_username(self, value: str) -> str:
        """NFKC first (what ``create_user`` stores: ``ｂｏｂ`` and ``bob`` are one name), then the
        ASCII-only rule (no lookalikes such as Cyrillic ``а`` or Turkish ``ı``, as Mastodon allows
        only ``[a-zA-Z0-9_]``), then uniqueness ignoring case."""
        username = User.normalize_username(value)
        if not USERNAME_PATTERN.fullmatch(username):
            raise serializers.ValidationError(
                "Use 3–150 characters: ASCII letters (a–z, A–Z), digits, `_`, `.` or `-`."
            )
        if username_taken(username):
            raise serializers.ValidationError(USERNAME_TAKEN)
        return username

    def validate(self, attrs):
        candidate = User(username=attrs["username"], email=attrs.get("email", ""))
        try:
            password_validation.validate_password(attrs["password"], user=candidate)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)})
        return attrs


class RegisteredSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    token = serializers.CharField()


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)

    def validate_username(self, value: str) -> str:
        """NFKC, as stored and as the admin's login form does, so ``ｂｏｂ`` logs in as ``bob``."""
        return User.normalize_username(value)

    password = serializers.CharField(max_length=128, style={"input_type": "password"})


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()


class AuthorSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class PollOptionOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()
    votes = serializers.IntegerField()


class PollOutSerializer(serializers.Serializer):
    question = serializers.CharField()
    multiple_choice = serializers.BooleanField()
    options = PollOptionOutSerializer(many=True)
    total_voters = serializers.IntegerField()
    my_votes = serializers.ListField(child=serializers.IntegerField())


def poll_data(poll: Poll, user) -> dict:
    options = list(poll.options.all())
    my_votes: list[int] = []
    if user is not None and user.is_authenticated:
        my_votes = sorted(poll.votes.filter(user=user).values_list("option_id", flat=True))
    return {
        "question": poll.question,
        "multiple_choice": poll.multiple_choice,
        "options": [{"id": o.id, "text": o.text, "votes": o.votes} for o in options],
        "total_voters": poll.total_voters,
        "my_votes": my_votes,
    }


class RevisionMediaSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="media_id")
    position = serializers.IntegerField()
    description = serializers.CharField(help_text="The medium's alt text in this revision.")


class RevisionSerializer(serializers.ModelSerializer):
    """One revision of a post (``GET content/posts/{id}/revisions``). Media are ids and alt texts:
    bytes are reached through the post's or the medium's own JSON, with their visibility rules."""

    media = RevisionMediaSerializer(source="items", many=True, read_only=True)
    link_url = serializers.CharField(read_only=True, help_text="An http(s) URL; blank unless a link post.")

    class Meta:
        model = PostRevision
        fields = [
            "id",
            "number",
            "status",
            "title",
            "body",
            "link_url",
            "sensitive",
            "spoiler_text",
            "media",
            "created_at",
            "decided_at",
            "public_at",
            "public_until",
        ]
        read_only_fields = fields


class PendingRevisionMediaSerializer(MediaSerializer):
    """Media JSON of a waiting revision, with the medium's alt text in that revision."""

    description = serializers.CharField(read_only=True, help_text="Alt text in this revision.")

    class Meta(MediaSerializer.Meta):
        fields = [*MediaSerializer.Meta.fields, "description"]
        read_only_fields = fields


class RevisionCardSerializer(serializers.Serializer):
    url = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    site_name = serializers.CharField()
    image_media_id = serializers.UUIDField(
        allow_null=True, help_text="The card's image: one of this revision's `media`."
    )


class RevisionLinkPreviewSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["fetching", "done"], help_text="`fetching`: the revision waits for the `links` worker."
    )
    card = RevisionCardSerializer(allow_null=True, required=False)
    error = serializers.DictField(
        allow_null=True, required=False, help_text="{code, detail} of a failed fetch."
    )


class PendingRevisionSerializer(RevisionSerializer):
    """The pending revision as its owner and staff see it: media JSON (signed, private URLs) with
    ``description``, and the link card of its own when its ``link_url`` is new."""

    media = PendingRevisionMediaSerializer(many=True, read_only=True)
    link_preview = RevisionLinkPreviewSerializer(
        allow_null=True,
        read_only=True,
        help_text="Link posts whose edit changes `link_url`: the new card, public only when this "
        "revision clears. Null: the revision keeps the public card.",
    )

    class Meta(RevisionSerializer.Meta):
        fields = [*RevisionSerializer.Meta.fields, "link_preview"]
        read_only_fields = fields


def _is_preview(media) -> bool:
    return media.kind == "thumbnail" and bool((media.metadata or {}).get("link_preview"))


class LinkPreviewSerializer(serializers.Serializer):
    url = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    site_name = serializers.CharField()
    image = MediaSerializer(allow_null=True, help_text="The preview image, a `thumbnail` medium, once ready.")


class PostMetadataSerializer(serializers.Serializer):
    media_count = serializers.IntegerField()
    link_preview = LinkPreviewSerializer(
        required=False, help_text="Link posts: the page's card, filled by the `links` worker."
    )
    link_preview_error = serializers.DictField(
        required=False, help_text="Owner and staff: why the card could not be built {code, detail}."
    )


class PostSerializer(serializers.ModelSerializer):
    """Post JSON (DESIGN.md §4)."""

    author = AuthorSerializer(read_only=True)
    # Blank on non-link posts, which format "uri" would not allow.
    link_url = serializers.CharField(read_only=True, help_text="An http(s) URL; blank unless a link post.")
    rejection_reason = serializers.SerializerMethodField()
    media = serializers.SerializerMethodField()
    poll = serializers.SerializerMethodField()
    metadata = serializers.SerializerMethodField()
    livestream = serializers.SerializerMethodField(
        help_text="Livestream posts (null otherwise): {status idle|live|ended|failed, playback_url (signed "
        "HLS), started_at, ended_at, end_reason, recording_media_id}; the author also gets ingest_url, "
        "stream_key, obs (encoder settings) and error."
    )
    pending_revision = serializers.SerializerMethodField(
        help_text="Owner and staff only (null for anyone else): the edit waiting for the prescreen or a "
        "moderator. Everything else in this object is what the public sees."
    )

    class Meta:
        model = Post
        fields = [
            "id",
            "type",
            "status",
            "moderation_state",
            "title",
            "body",
            "link_url",
            "sensitive",
            "spoiler_text",
            "author",
            "media",
            "poll",
            "metadata",
            "publish_requested",
            "rejection_reason",
            "published_at",
            "edited_at",
            "scheduled_at",
            "pending_revision",
            "livestream",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_livestream(self, post: Post) -> dict | None:
        return livestream_json(post, self.context.get("request"))

    @extend_schema_field(PendingRevisionSerializer(allow_null=True))
    def get_pending_revision(self, post: Post) -> dict | None:
        if not post.pending_revision_id:
            return None
        request = self.context.get("request")
        if not is_owner_or_staff(getattr(request, "user", None), post.author_id):
            return None
        revision = post.pending_revision
        items = list(revision.items.select_related("media").order_by("position"))
        public_ids = set(public_media().filter(post=post).values_list("pk", flat=True))
        media = []
        for item in items:
            m = item.media
            m.post = post
            m.in_public_revision = m.pk in public_ids
            media.append(m)
        out = RevisionSerializer(revision).data
        rendered = MediaSerializer(media, many=True, context=self.context).data
        for row, item in zip(rendered, items, strict=True):
            row["description"] = item.description
        out["media"] = rendered
        out["link_preview"] = revision.link_preview
        return out

    def _attached(self, post: Post) -> list:
        media = [m for m in post.media.all() if m.detached_at is None]
        for m in media:
            m.post = post  # already loaded: no query per medium
        return media

    @extend_schema_field(MediaSerializer(many=True))
    def get_media(self, post: Post) -> list:
        """The post's media; a link preview image is shown in ``metadata.link_preview.image`` only."""
        media = [m for m in self._attached(post) if not _is_preview(m)]
        return MediaSerializer(media, many=True, context=self.context).data

    @extend_schema_field(PollOutSerializer(allow_null=True))
    def get_poll(self, post: Post) -> dict | None:
        if post.type != PostType.POLL:
            return None
        try:
            poll = post.poll
        except Poll.DoesNotExist:
            return None
        request = self.context.get("request")
        return poll_data(poll, getattr(request, "user", None))

    @extend_schema_field(PostMetadataSerializer)
    def get_metadata(self, post: Post) -> dict:
        data = dict(post.metadata or {})
        attached = self._attached(post)
        data["media_count"] = sum(1 for m in attached if not _is_preview(m))
        if isinstance(data.get("link_preview"), dict):
            preview = dict(data["link_preview"])
            image_id = preview.pop("image_media_id", None)
            image = next((m for m in attached if str(m.pk) == image_id and _is_preview(m)), None)
            ready = image is not None and image.processing_status == "ready"
            preview["image"] = MediaSerializer(image, context=self.context).data if ready else None
            data["link_preview"] = preview
        if post.blocked_media:
            data["blocked_media"] = True  # a column since issue 10; the API still shows it here
        request = self.context.get("request")
        user = getattr(request, "user", None)
        if not is_owner_or_staff(user, post.author_id):
            for private in ("ai_review_error", "blocked_media", "publish_error", "link_preview_error"):
                data.pop(private, None)
        return data

    def get_rejection_reason(self, post: Post) -> str:
        """The moderator's reason, on rejected posts only; blank otherwise."""
        return post.rejection_reason if post.status == PostStatus.REJECTED else ""


class PollInSerializer(serializers.Serializer):
    question = serializers.CharField(max_length=300)
    options = serializers.ListField(child=serializers.CharField(max_length=200), min_length=2, max_length=10)
    multiple_choice = serializers.BooleanField(default=False)


class PostCreateSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=PostType.choices)
    title = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    body = serializers.CharField(max_length=40_000, required=False, allow_blank=True, default="")
    link_url = serializers.URLField(max_length=2000, required=False, allow_blank=True, default="")
    poll = PollInSerializer(required=False, allow_null=True, default=None)
    sensitive = serializers.BooleanField(required=False, default=False, help_text="Hide behind a warning.")
    spoiler_text = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default="", help_text="The content warning."
    )


class MediaDescriptionSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    description = serializers.CharField(max_length=1500, allow_blank=True)


class PostUpdateSerializer(serializers.Serializer):
    """A draft is edited in place; a published post gets a new revision (DESIGN.md §9)."""

    title = serializers.CharField(max_length=300, required=False, allow_blank=True)
    body = serializers.CharField(max_length=40_000, required=False, allow_blank=True)
    link_url = serializers.URLField(max_length=2000, required=False, allow_blank=True)
    sensitive = serializers.BooleanField(required=False)
    spoiler_text = serializers.CharField(max_length=500, required=False, allow_blank=True)
    poll = PollInSerializer(required=False)
    media = MediaDescriptionSerializer(
        many=True,
        required=False,
        max_length=50,
        help_text="Alt texts of attached media: [{id, description}].",
    )


class PublishSerializer(serializers.Serializer):
    publish_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Schedule: an ISO 8601 time with zone, 1 minute to 1 year ahead. 202, status `scheduled`.",
    )


class VoteSerializer(serializers.Serializer):
    option_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), min_length=1, max_length=10
    )


class ReportSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=ReportReason.choices)
    detail = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ReportOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    post_id = serializers.UUIDField()
    reason = serializers.CharField()
    detail = serializers.CharField()
    created_at = serializers.DateTimeField()
