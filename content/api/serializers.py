from __future__ import annotations

import re

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from content.models import Poll, Post, PostStatus, PostType, ReportReason
from content.services import is_owner_or_staff
from media.api.serializers import MediaSerializer

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


class PostSerializer(serializers.ModelSerializer):
    """Post JSON (DESIGN.md §4)."""

    author = AuthorSerializer(read_only=True)
    # Blank on non-link posts, which format "uri" would not allow.
    link_url = serializers.CharField(read_only=True, help_text="An http(s) URL; blank unless a link post.")
    rejection_reason = serializers.SerializerMethodField()
    media = serializers.SerializerMethodField()
    poll = serializers.SerializerMethodField()
    metadata = serializers.SerializerMethodField()

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
            "author",
            "media",
            "poll",
            "metadata",
            "publish_requested",
            "rejection_reason",
            "published_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(MediaSerializer(many=True))
    def get_media(self, post: Post) -> list:
        media = [m for m in post.media.all() if m.detached_at is None]
        for m in media:
            m.post = post  # already loaded: no query per medium
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

    @extend_schema_field(serializers.DictField())
    def get_metadata(self, post: Post) -> dict:
        data = dict(post.metadata or {})
        data["media_count"] = sum(1 for m in post.media.all() if m.detached_at is None)
        if post.blocked_media:
            data["blocked_media"] = True  # a column since issue 10; the API still shows it here
        request = self.context.get("request")
        user = getattr(request, "user", None)
        if not is_owner_or_staff(user, post.author_id):
            for private in ("ai_review_error", "blocked_media", "publish_error"):
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


class PostUpdateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=300, required=False, allow_blank=True)
    body = serializers.CharField(max_length=40_000, required=False, allow_blank=True)
    link_url = serializers.URLField(max_length=2000, required=False, allow_blank=True)
    poll = PollInSerializer(required=False)


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
