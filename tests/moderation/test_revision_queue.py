"""The review queue's side of edits after publish (DESIGN.md §9, §11): a held edit is a queue item
with a diff against the public revision (escaped), and approve/reject act on that revision."""

from __future__ import annotations

import re

import pytest

from content import services
from content.models import PostStatus, PostType, RevisionStatus
from media.models import ProcessingStatus
from moderation import services as moderation
from tests.factories import MediaFactory, PostFactory, UserFactory
from tests.moderation.test_admin import QUEUE, _fill_queue, decide_url, detail_url, mod_client, moderator

__all__ = ["mod_client", "moderator"]  # fixtures shared with test_admin

pytestmark = pytest.mark.django_db


def held_edit(body: str, *, title="Public title", author=None):
    author = author or UserFactory()
    post = PostFactory(
        author=author, type=PostType.IMAGE, title=title, body="The public body", published=True
    )
    MediaFactory(post=post, processing_status=ProcessingStatus.READY)
    services.post_edit(post_id=post.pk, actor=author, changes={"body": body})
    post.refresh_from_db()
    moderation.ai_verdict_apply(
        post_id=post.pk,
        revision=post.revision,
        provider="stub",
        model="stub",
        scores={},
        overall=0.5,
        labels=[],
        duration_ms=1.0,
    )
    post.refresh_from_db()
    assert post.pending_revision.status == RevisionStatus.HELD
    return post


def test_held_edit_is_queued_with_an_escaped_diff(mod_client):
    post = held_edit("The public body <script>alert(1)</script> now")
    listing = mod_client.get(QUEUE).content.decode()
    assert "edit #" in listing and "Public title" in listing
    page = mod_client.get(detail_url(post)).content.decode()
    assert 'id="pf-revision-diff"' in page
    diff = page[page.find("pf-revision-diff") :][:800]
    assert re.search(r"<ins>[^<]*&lt;script&gt;alert\(1\)&lt;/script&gt;[^<]*</ins>", diff), diff
    assert "<script>alert(1)" not in page
    assert f'name="revision_id" value="{post.pending_revision_id}"' in page


def test_approve_and_reject_from_the_queue_act_on_the_revision(mod_client):
    approved = held_edit("approved words")
    r = mod_client.post(
        decide_url(approved),
        {"op": "approve", "expected_status": "published", "revision_id": approved.pending_revision_id},
    )
    assert r.status_code == 302
    approved.refresh_from_db()
    assert (approved.status, approved.body, approved.pending_revision_id) == (
        PostStatus.PUBLISHED,
        "approved words",
        None,
    )
    rejected = held_edit("rejected words")
    revision_id = rejected.pending_revision_id
    mod_client.post(decide_url(rejected), {"op": "reject", "reason": "No", "revision_id": revision_id})
    rejected.refresh_from_db()
    assert (rejected.status, rejected.body, rejected.pending_revision_id) == (
        PostStatus.PUBLISHED,
        "The public body",
        None,
    )
    assert rejected.revisions.get(pk=revision_id).status == RevisionStatus.REJECTED
    # A second moderator acting on the same (now decided) revision is told so.
    r = mod_client.post(decide_url(rejected), {"op": "approve", "revision_id": revision_id}, follow=True)
    assert "already decided" in r.content.decode()


def test_queue_page_with_held_edits_costs_the_same_queries(mod_client, django_assert_max_num_queries):
    _fill_queue(20)
    mod_client.get(QUEUE)
    with django_assert_max_num_queries(12) as without:
        assert mod_client.get(QUEUE).status_code == 200
    for i in range(20):
        held_edit(f"edit {i}")
    with django_assert_max_num_queries(len(without.captured_queries)):
        response = mod_client.get(QUEUE)
        assert response.status_code == 200
        assert any("edit #" in str(row) for row in [response.content.decode()])
