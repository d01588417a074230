from __future__ import annotations

from pathlib import Path

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from content.models import PostStatus
from content.services import is_owner_or_staff
from media import storage
from media.models import Media, Upload
from media.revocation import media_mark_urls_exposed


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

    class Meta:
        model = Media
        fields = [
            "id",
            "post_id",
            "kind",
            "is_primary",
            "processing_status",
            "processing_error",
            "mime_type",
            "size_bytes",
            "sha256",
            "width",
            "height",
            "duration_seconds",
            "blurhash",
            "variants",
            "original_url",
            "metadata",
            "created_at",
        ]
        read_only_fields = fields

    def _public(self, media: Media) -> bool:
        """Whether this viewer gets the public (cacheable, on S3 bearer) URLs of ``media``. A bearer
        URL is recorded before it is issued, so hiding the post later rotates the keys it names."""
        post = media.post
        if post is None or post.status != PostStatus.PUBLISHED or post.deleted_at is not None:
            return False
        return media_mark_urls_exposed(media)

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
            out[name] = {
                "url": self._url(
                    media, v["key"], v.get("mime_type", "application/octet-stream"), name, public=public
                ),
                "width": v.get("width"),
                "height": v.get("height"),
                "mime_type": v.get("mime_type"),
                "size_bytes": v.get("size_bytes"),
            }
        return out

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
        if not _viewer_is_owner(media, self.context.get("request")):
            meta.pop("blocked_media", None)
        data["metadata"] = meta
        return data


class UploadCreateSerializer(serializers.Serializer):
    filename = serializers.CharField(max_length=255)
    content_type = serializers.CharField(max_length=100)
    size = serializers.IntegerField(min_value=1, max_value=2**53)
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", required=False, allow_blank=True, default="")


class UploadTargetSerializer(serializers.Serializer):
    upload_id = serializers.UUIDField()
    method = serializers.ChoiceField(choices=["PUT", "POST"])
    url = serializers.URLField()
    headers = serializers.DictField(child=serializers.CharField())
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

    def validate(self, attrs):
        if attrs.get("file") and attrs.get("upload_id"):
            raise serializers.ValidationError("Send either a multipart `file` or an `upload_id`, not both.")
        if not attrs.get("file") and not attrs.get("upload_id"):
            raise serializers.ValidationError("Send a multipart `file` or a JSON `upload_id`.")
        return attrs
