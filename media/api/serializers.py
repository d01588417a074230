from __future__ import annotations

import posixpath
from pathlib import Path

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from content.models import PostStatus
from content.selectors import media_in_public_revision
from content.services import is_owner_or_staff
from media import storage
from media.models import Media, MediaKind, ProcessingStatus, Upload
from media.progress import media_progress
from media.revocation import media_mark_urls_exposed


class FocusSerializer(serializers.Serializer):
    x = serializers.FloatField(min_value=-1.0, max_value=1.0)
    y = serializers.FloatField(min_value=-1.0, max_value=1.0)


@extend_schema_field(FocusSerializer(allow_null=True))
class FocusField(serializers.Field):
    """A focal point: JSON ``{"x": 0.2, "y": -0.5}``, or ``"0.2,-0.5"`` (Mastodon's form field);
    each coordinate in [-1, 1]; ``null`` clears it."""

    default_error_messages = {
        "invalid": 'Give the focus as {{x, y}} or as "x,y", each a number between -1 and 1.',
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str):
            if not data.strip():
                return None
            parts = data.split(",")
            if len(parts) != 2:
                self.fail("invalid")
            data = {"x": parts[0].strip(), "y": parts[1].strip()}
        if not isinstance(data, dict):
            self.fail("invalid")
        inner = FocusSerializer(data=data)
        if not inner.is_valid():
            raise serializers.ValidationError(inner.errors)
        return {"x": inner.validated_data["x"], "y": inner.validated_data["y"]}

    def to_representation(self, value):
        return value


class VariantSerializer(serializers.Serializer):
    url = serializers.URLField()
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    mime_type = serializers.CharField()
    size_bytes = serializers.IntegerField(allow_null=True)


def _viewer_is_owner(media: Media, request) -> bool:
    return is_owner_or_staff(getattr(request, "user", None), media.owner_id)


class MediaSerializer(serializers.ModelSerializer):
    """Media JSON (DESIGN.md §4). URLs are signed and expire; the original (which may carry EXIF
    GPS) is only ever given to its owner and staff."""

    variants = serializers.SerializerMethodField()
    original_url = serializers.SerializerMethodField()
    post_id = serializers.UUIDField(read_only=True)
    captions = serializers.SerializerMethodField(
        help_text="WebVTT captions of what is said (issue 17), signed like a variant; null without speech."
    )
    transcript_id = serializers.SerializerMethodField(
        help_text="The transcript medium of this audio or video (PATCH content/media/{id}/transcript)."
    )
    focus = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Media
        fields = [
            "id",
            "post_id",
            "kind",
            "is_primary",
            "processing_status",
            "processing_error",
            "progress",
            "description",
            "focus",
            "mime_type",
            "size_bytes",
            "sha256",
            "width",
            "height",
            "duration_seconds",
            "blurhash",
            "variants",
            "original_url",
            "captions",
            "transcript_id",
            "metadata",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(FocusSerializer(allow_null=True))
    def get_focus(self, media: Media) -> dict | None:
        return media.focus

    @extend_schema_field(serializers.FloatField(allow_null=True, min_value=0, max_value=1))
    def get_progress(self, media: Media) -> float | None:
        """0 pending, the running attempt's real progress while processing (ffmpeg's own for audio
        and video), 1 ready, null failed."""
        return media_progress(media)

    def _public(self, media: Media) -> bool:
        """Whether this viewer gets the public (cacheable, on S3 bearer) URLs of ``media``. A bearer
        URL is recorded before it is issued, so hiding the post later rotates the keys it names."""
        post = media.post
        if post is None or post.status != PostStatus.PUBLISHED or post.deleted_at is not None:
            return False
        if not media_in_public_revision(media):  # an edit's media waiting for the prescreen
            return False
        return media_mark_urls_exposed(media)

    @staticmethod
    def _published(media: Media) -> bool:
        post = media.post
        return post is not None and post.status == PostStatus.PUBLISHED and post.deleted_at is None

    def _url(self, media: Media, key: str, mime: str, name: str, *, public: bool) -> str:
        filename = f"{media.pk}-{name}{Path(key).suffix}"
        return storage.signed_url(
            key,
            media_id=media.pk,
            mime_type=mime,
            filename=filename,
            public=public,
            request=self.context.get("request"),
        )

    @extend_schema_field(serializers.DictField(child=VariantSerializer()))
    def get_variants(self, media: Media) -> dict:
        out = {}
        public = self._public(media)
        for name, v in (media.variants or {}).items():
            if name == "hls":
                # One token in the path grants the master playlist and everything under its folder
                # (relative URIs), always through Django: DESIGN.md §8 HLS, docs/operations.md.
                url = storage.signed_prefix_url(
                    posixpath.dirname(v["key"]),
                    media_id=media.pk,
                    entry=posixpath.basename(v["key"]),
                    public=self._published(media),
                    request=self.context.get("request"),
                )
            else:
                url = self._url(
                    media, v["key"], v.get("mime_type", "application/octet-stream"), name, public=public
                )
            out[name] = {
                "url": url,
                "width": v.get("width"),
                "height": v.get("height"),
                "mime_type": v.get("mime_type"),
                "size_bytes": v.get("size_bytes"),
            }
        return out

    def _transcript(self, media: Media) -> Media | None:
        """The medium's transcript: itself, or its derived ``transcript`` (from the post's prefetched
        media when the post serializer loaded them, so a feed costs no query per medium)."""
        if media.kind == MediaKind.TRANSCRIPT:
            return media
        spoken = (MediaKind.AUDIO, MediaKind.VIDEO, MediaKind.LIVESTREAM_RECORDING)
        if media.kind not in spoken or not media.post:
            return None
        return next(
            (
                m
                for m in media.post.media.all()
                if m.parent_id == media.pk and m.kind == MediaKind.TRANSCRIPT and m.detached_at is None
            ),
            None,
        )

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_captions(self, media: Media) -> str | None:
        transcript = self._transcript(media)
        if transcript is None or transcript.processing_status != ProcessingStatus.READY:
            return None
        captions = (transcript.variants or {}).get("captions")
        if not captions:
            return None
        transcript.post = media.post
        return self._url(transcript, captions["key"], "text/vtt", "captions", public=self._public(transcript))

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_transcript_id(self, media: Media) -> str | None:
        transcript = self._transcript(media)
        return str(transcript.pk) if transcript is not None else None

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_original_url(self, media: Media) -> str | None:
        if not _viewer_is_owner(media, self.context.get("request")):
            return None
        # The original may carry EXIF/GPS: always served through Django, which checks at every request
        # that the viewer is the owner or staff (media.api.views.media_file), never cached.
        return self._url(media, media.original_key, media.mime_type, "original", public=False)

    def to_representation(self, media: Media) -> dict:
        data = super().to_representation(media)
        meta = dict(data.get("metadata") or {})
        # Which blocked hash matched, and how closely, is for moderators only: an uploader could
        # otherwise tune a copy until it slips under PDQ_MATCH_DISTANCE.
        meta.pop("blocked_match", None)
        if not _viewer_is_owner(media, self.context.get("request")):
            meta.pop("blocked_media", None)
            # A transcript's held edit is not cleared yet, and what the recogniser heard before the
            # creator corrected it is for the prescreen and moderators: neither is anyone else's.
            meta.pop("pending_edit", None)
            meta.pop("speech_segments", None)
        data["metadata"] = meta
        return data


class UploadCreateSerializer(serializers.Serializer):
    filename = serializers.CharField(max_length=255)
    content_type = serializers.CharField(max_length=100)
    size = serializers.IntegerField(min_value=1, max_value=2**53)
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", required=False, allow_blank=True, default="")
    resumable = serializers.BooleanField(
        default=False,
        help_text="Send the file in parts (S3 multipart semantics); required above UPLOAD_SINGLE_MAX_BYTES.",
    )


class PartRequestSerializer(serializers.Serializer):
    part_numbers = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=10_000), min_length=1, max_length=1000
    )


class PartTargetSerializer(serializers.Serializer):
    part_number = serializers.IntegerField()
    method = serializers.CharField()
    url = serializers.URLField()
    headers = serializers.DictField(child=serializers.CharField())


class PartTargetsSerializer(serializers.Serializer):
    parts = PartTargetSerializer(many=True)


class PartSerializer(serializers.Serializer):
    part_number = serializers.IntegerField(min_value=1, max_value=10_000)
    etag = serializers.CharField(max_length=200)


class PartStateSerializer(PartSerializer):
    size = serializers.IntegerField()


class UploadCompleteSerializer(serializers.Serializer):
    parts = PartSerializer(many=True, allow_empty=False, max_length=10_000)


class UploadStateSerializer(serializers.Serializer):
    upload_id = serializers.UUIDField()
    state = serializers.CharField()
    resumable = serializers.BooleanField()
    part_size = serializers.IntegerField(allow_null=True)
    part_count = serializers.IntegerField(allow_null=True)
    received_size = serializers.IntegerField()
    parts = PartStateSerializer(many=True)
    expires_at = serializers.DateTimeField()


class UploadTargetSerializer(serializers.Serializer):
    upload_id = serializers.UUIDField()
    method = serializers.ChoiceField(choices=["PUT", "POST", "multipart"])
    url = serializers.URLField(required=False, help_text="Single uploads only.")
    headers = serializers.DictField(child=serializers.CharField(), required=False)
    part_size = serializers.IntegerField(required=False, help_text="Resumable uploads: bytes per part.")
    part_count = serializers.IntegerField(required=False, help_text="Resumable uploads: how many parts.")
    expires_at = serializers.DateTimeField()
    max_bytes = serializers.IntegerField()


# ``fields`` is a Serializer attribute, so the response field of that name is declared this way
# (the class only describes the response for the schema).
UploadTargetSerializer._declared_fields["fields"] = serializers.DictField(
    child=serializers.CharField(), help_text="Form fields to send with a presigned POST (S3); empty for PUT."
)


class UploadStatusSerializer(serializers.ModelSerializer):
    upload_id = serializers.UUIDField(source="id")

    class Meta:
        model = Upload
        fields = ["upload_id", "state", "received_size", "expires_at"]


class AttachSerializer(serializers.Serializer):
    file = serializers.FileField(required=False, help_text="Multipart: the file itself.")
    upload_id = serializers.UUIDField(required=False, help_text="JSON: a finished direct upload.")
    is_primary = serializers.BooleanField(default=True)
    description = serializers.CharField(
        max_length=1500, required=False, allow_blank=True, default="", help_text="Alt text."
    )
    focus = FocusField(required=False, default=None)

    def validate(self, attrs):
        if attrs.get("file") and attrs.get("upload_id"):
            raise serializers.ValidationError("Send either a multipart `file` or an `upload_id`, not both.")
        if not attrs.get("file") and not attrs.get("upload_id"):
            raise serializers.ValidationError("Send a multipart `file` or a JSON `upload_id`.")
        return attrs


class MediaUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(
        max_length=1500, required=False, allow_blank=True, help_text="Alt text."
    )
    focus = FocusField(required=False)


class QuotaSerializer(serializers.Serializer):
    used_bytes = serializers.IntegerField()
    limit_bytes = serializers.IntegerField()
    media_count = serializers.IntegerField()


class TranscriptCueSerializer(serializers.Serializer):
    start = serializers.FloatField(help_text="Seconds from the start.")
    end = serializers.FloatField()
    text = serializers.CharField()


class TranscriptPendingEditSerializer(serializers.Serializer):
    text = serializers.CharField(allow_blank=True)
    cues = TranscriptCueSerializer(many=True)
    submitted_at = serializers.CharField(allow_null=True)


class TranscriptSerializer(serializers.Serializer):
    """A transcript (issue 17): what is said in an audio or video, as caption cues."""

    id = serializers.UUIDField()
    media_id = serializers.UUIDField(help_text="The audio or video it transcribes.")
    processing_status = serializers.CharField()
    language = serializers.CharField(allow_blank=True)
    text = serializers.CharField(allow_blank=True, help_text="One caption per line.")
    cues = TranscriptCueSerializer(many=True)
    captions = serializers.URLField(allow_null=True, help_text="The WebVTT file, signed like a variant.")
    skipped = serializers.CharField(allow_blank=True, help_text="Why there is no text (no speech…).")
    edited_at = serializers.CharField(allow_null=True)
    pending_edit = TranscriptPendingEditSerializer(
        allow_null=True,
        help_text="The owner's edit waiting for the prescreen (owner only; null for everyone else).",
    )


class TranscriptEditSerializer(serializers.Serializer):
    text = serializers.CharField(
        max_length=20_000,
        help_text="The corrected transcript, one caption per line (same line count keeps each timing).",
    )
