"""media/services.py: attach, detach and retry rules."""

import pytest

from config.errors import InvalidTransition
from content.models import Post
from media.services import media_detach, safe_filename
from moderation.models import BlockedMedia
from tests.conftest import client_for
from tests.factories import MediaFactory, PostFactory
from tests.media.helpers import jpeg_bytes, sha256, upload_file

pytestmark = pytest.mark.django_db


def test_retry_refused_for_media_of_published_posts(user):
    media = MediaFactory(post=PostFactory(author=user, published=True), processing_status="failed")
    from media.services import media_retry

    with pytest.raises(InvalidTransition):
        media_retry(media_id=media.pk, actor=user)


def test_detaching_the_blocklisted_file_clears_the_flag(user, platform, django_capture_on_commit_callbacks):
    platform(blocked_media_action="quarantine", post_processing_enabled=False)
    data = jpeg_bytes(16, 16, (5, 5, 5))
    BlockedMedia.objects.create(sha256=sha256(data))
    post = PostFactory(author=user, type="image", body="")
    with django_capture_on_commit_callbacks(execute=True):
        media = (
            client_for(user)
            .post(
                f"/api/v1/content/posts/{post.pk}/media",
                {"file": upload_file("a.jpg", data)},
                format="multipart",
            )
            .json()
        )
    assert Post.objects.get(pk=post.pk).blocked_media is True
    with django_capture_on_commit_callbacks(execute=True):
        media_detach(post_id=post.pk, media_id=media["id"], actor=user)
    assert Post.objects.get(pk=post.pk).blocked_media is False


def test_filenames_are_made_safe_for_headers():
    assert safe_filename('a\nb".jpg') == "ab.jpg"
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\photos\\x.png") == "x.png"
    assert safe_filename("\x00") == "upload"
