"""moderation/review.py: building the provider input."""

from pathlib import Path

import pytest

from tests.factories import MediaFactory, PostFactory

pytestmark = pytest.mark.django_db


def test_review_refuses_to_judge_unprocessed_media(user, platform):
    from moderation.providers.base import ProviderError
    from moderation.review import build_input

    post = PostFactory(author=user, type="image")
    MediaFactory(post=post, processing_status="pending")
    with pytest.raises(ProviderError):
        build_input(post, Path("/tmp"))
