"""Edits after publish (DESIGN.md §9): revisions, the public revision, the prescreen of an edit, the
moderators' decisions on it, and the history endpoint."""

from __future__ import annotations

import pytest

from config.errors import ValidationFailed
from content import services
from content.models import PostRevision, PostStatus, PostType, RevisionStatus
from media.models import Media, ProcessingStatus
from moderation import services as moderation
from moderation.models import AiReview, Decision, ModerationDecision
from moderation.selectors import review_queue
from tests.conftest import client_for
from tests.factories import MediaFactory, PostFactory

pytestmark = pytest.mark.django_db


def verdict(post, overall: float, revision: int | None = None):
    post.refresh_from_db()
    return moderation.ai_verdict_apply(
        post_id=post.pk,
        revision=post.revision if revision is None else revision,
        provider="stub",
        model="stub-1",
        scores={"stub": overall},
        overall=overall,
        labels=[],
        duration_ms=1.0,
    )


def published_image_post(user, *, title="Old title", body="Old body"):
    post = PostFactory(author=user, type=PostType.IMAGE, title=title, body=body, published=True)
    media = MediaFactory(post=post, processing_status=ProcessingStatus.READY)
    return post, media


def test_reactive_only_edit_is_public_at_once_with_history(user, other_user, platform):
    platform(moderation_mode="reactive_only")
    post, _ = published_image_post(user)
    r = client_for(user).patch(
        f"/api/v1/content/posts/{post.pk}",
        {"title": "New title", "sensitive": True, "spoiler_text": "spiders"},
        format="json",
    )
    assert r.status_code == 200, r.content
    data = client_for(other_user).get(f"/api/v1/content/posts/{post.pk}").json()
    assert (data["title"], data["sensitive"], data["spoiler_text"]) == ("New title", True, "spiders")
    assert data["edited_at"] and data["pending_revision"] is None
    post.refresh_from_db()
    revisions = list(post.revisions.order_by("number"))
    assert [r.status for r in revisions] == [RevisionStatus.SUPERSEDED, RevisionStatus.CLEARED]
    assert post.public_revision_id == revisions[1].pk and post.pending_revision_id is None
    history = client_for(other_user).get(f"/api/v1/content/posts/{post.pk}/revisions").json()
    assert [h["title"] for h in history] == ["New title", "Old title"]


def test_prescreen_keeps_the_public_revision_until_the_edit_clears(user, other_user):
    post, _ = published_image_post(user)
    services.post_update(post_id=post.pk, actor=user, body="Edited body")
    post.refresh_from_db()
    assert (post.status, post.body, post.edited_at) == (PostStatus.PUBLISHED, "Old body", None)
    pending = post.pending_revision
    assert (pending.status, pending.body, pending.number) == (
        RevisionStatus.PENDING,
        "Edited body",
        post.revision,
    )
    assert client_for(other_user).get(f"/api/v1/content/posts/{post.pk}").json()["body"] == "Old body"
    owner_view = client_for(user).get(f"/api/v1/content/posts/{post.pk}").json()
    assert owner_view["body"] == "Old body" and owner_view["pending_revision"]["body"] == "Edited body"

    assert verdict(post, 0.05).decision == Decision.PUBLISH
    post.refresh_from_db()
    assert (post.body, post.public_revision_id, post.pending_revision_id) == ("Edited body", pending.pk, None)
    assert post.edited_at is not None
    assert client_for(other_user).get(f"/api/v1/content/posts/{post.pk}").json()["body"] == "Edited body"


def test_held_edit_waits_in_the_queue_and_approve_makes_it_public(user, staff):
    post, _ = published_image_post(user)
    services.post_update(post_id=post.pk, actor=user, body="You are all idiots")
    assert verdict(post, 0.5).decision == Decision.REVIEW
    post.refresh_from_db()
    held = post.pending_revision
    assert (post.status, post.body, held.status) == (PostStatus.PUBLISHED, "Old body", RevisionStatus.HELD)
    assert post.pk in set(review_queue().values_list("pk", flat=True))

    moderation.post_revision_approve(post_id=post.pk, revision_id=held.pk, moderator=staff)
    post.refresh_from_db()
    assert (post.body, post.public_revision_id, post.pending_revision_id) == (
        "You are all idiots",
        held.pk,
        None,
    )
    assert ModerationDecision.objects.filter(
        post=post, action="approve", details__revision=held.number
    ).exists()
    assert post.pk not in set(review_queue().values_list("pk", flat=True))
    with pytest.raises(moderation.AlreadyDecided):
        moderation.post_revision_approve(post_id=post.pk, revision_id=held.pk, moderator=staff)


def test_flagged_edit_is_held_not_quarantining_the_public_post(user):
    post, _ = published_image_post(user)
    services.post_update(post_id=post.pk, actor=user, body="worse")
    verdict(post, 0.95)
    post.refresh_from_db()
    assert (post.status, post.body, post.pending_revision.status) == ("published", "Old body", "held")


def test_reject_drops_the_edit_keeps_the_public_one_and_the_creator_edits_again(user, staff):
    post, old_media = published_image_post(user)
    new = MediaFactory(post=post, processing_status=ProcessingStatus.READY, sha256="ab" * 32)
    services.post_edit(post_id=post.pk, actor=user, changes={"body": "bad"}, attach_media_ids=[new.pk])
    verdict(post, 0.5)
    post.refresh_from_db()
    held = post.pending_revision
    with pytest.raises(moderation.ReasonRequired):
        moderation.post_revision_reject(post_id=post.pk, revision_id=held.pk, moderator=staff)
    moderation.post_revision_reject(post_id=post.pk, revision_id=held.pk, moderator=staff, reason="Abuse")
    post.refresh_from_db()
    held.refresh_from_db()
    assert (post.status, post.body, post.pending_revision_id) == ("published", "Old body", None)
    assert held.status == RevisionStatus.REJECTED
    assert Media.objects.get(pk=new.pk).detached_at is not None
    assert Media.objects.get(pk=old_media.pk).detached_at is None
    again = services.post_edit(post_id=post.pk, actor=user, changes={"body": "better"})
    assert again.status == RevisionStatus.PENDING and again.number > held.number


def test_a_newer_edit_supersedes_the_waiting_one_and_its_verdict_is_stale(user):
    post, _ = published_image_post(user)
    first = services.post_edit(post_id=post.pk, actor=user, changes={"body": "one"})
    second = services.post_edit(post_id=post.pk, actor=user, changes={"title": "two"})
    first.refresh_from_db()
    assert first.status == RevisionStatus.SUPERSEDED
    assert (second.body, second.title) == ("one", "two"), "an edit builds on the waiting one"
    assert verdict(post, 0.01, revision=first.number).decision == Decision.STALE
    post.refresh_from_db()
    assert post.body == "Old body"
    assert verdict(post, 0.01, revision=second.number).decision == Decision.PUBLISH
    assert verdict(post, 0.01, revision=second.number).decision == Decision.STALE, "a duplicate"
    post.refresh_from_db()
    assert (post.title, post.body) == ("two", "one")


def test_attached_media_stays_private_until_cleared_and_detached_media_stays_public_until_then(
    user, other_user
):
    post, old = published_image_post(user)
    new = MediaFactory(post=post, processing_status=ProcessingStatus.READY)
    services.post_edit(post_id=post.pk, actor=user, attach_media_ids=[new.pk], detach_media_ids=[old.pk])
    public = client_for(other_user).get(f"/api/v1/content/posts/{post.pk}").json()
    assert [m["id"] for m in public["media"]] == [str(old.pk)]
    assert client_for(other_user).get(f"/api/v1/content/media/{new.pk}").status_code == 404
    assert client_for(user).get(f"/api/v1/content/media/{new.pk}").status_code == 200
    verdict(post, 0.01)
    public = client_for(other_user).get(f"/api/v1/content/posts/{post.pk}").json()
    assert [m["id"] for m in public["media"]] == [str(new.pk)]
    assert Media.objects.get(pk=old.pk).detached_at is not None


def test_edit_waits_for_its_new_media_before_the_prescreen(user, broker, django_capture_on_commit_callbacks):
    post, _ = published_image_post(user)
    new = MediaFactory(post=post, processing_status=ProcessingStatus.PROCESSING)
    with django_capture_on_commit_callbacks(execute=True):
        services.post_edit(post_id=post.pk, actor=user, attach_media_ids=[new.pk])
    assert "review" not in "".join(broker.queues), "no review before the file is processed"
    Media.objects.filter(pk=new.pk).update(processing_status=ProcessingStatus.READY)
    with django_capture_on_commit_callbacks(execute=True):
        services.post_media_settled(post_id=post.pk)
    post.refresh_from_db()
    messages = [m for q in broker.queues.values() for m in q.queue]
    assert len(messages) == 1 and str(post.revision) in str(messages[0])


def test_edit_rules(user, other_user):
    post, media = published_image_post(user)
    with pytest.raises(ValidationFailed) as e:
        services.post_edit(post_id=post.pk, actor=user, detach_media_ids=[media.pk])
    assert e.value.code == "media_required"
    r = client_for(user).patch(
        f"/api/v1/content/posts/{post.pk}",
        {"media": [{"id": str(other_user.pk) * 0 + "0" * 32}]},
        format="json",
    )
    assert r.status_code == 400
    r = client_for(user).patch(f"/api/v1/content/posts/{post.pk}", {"spoiler_text": "x" * 501}, format="json")
    assert r.status_code == 400 and "spoiler_text" in r.json()["errors"]
    r = client_for(other_user).patch(f"/api/v1/content/posts/{post.pk}", {"title": "x"}, format="json")
    assert r.status_code == 403
    unchanged = services.post_edit(post_id=post.pk, actor=user, changes={"title": "Old title"})
    assert unchanged.status == RevisionStatus.CLEARED and PostRevision.objects.filter(post=post).count() == 1


def test_alt_text_edits_are_a_revision(user, other_user):
    post, media = published_image_post(user)
    r = client_for(user).patch(
        f"/api/v1/content/posts/{post.pk}",
        {"media": [{"id": str(media.pk), "description": "A red square"}]},
        format="json",
    )
    assert r.status_code == 200, r.content
    pending = r.json()["pending_revision"]
    assert pending["media"][0]["description"] == "A red square"
    assert client_for(other_user).get(f"/api/v1/content/posts/{post.pk}").json()["pending_revision"] is None


def test_revision_history_others_see_only_what_was_public(user, other_user, staff):
    post, _ = published_image_post(user)
    services.post_edit(post_id=post.pk, actor=user, changes={"body": "cleared edit"})
    verdict(post, 0.01)
    services.post_edit(post_id=post.pk, actor=user, changes={"body": "waiting edit"})
    url = f"/api/v1/content/posts/{post.pk}/revisions"
    for who in (user, staff):
        bodies = [r["body"] for r in client_for(who).get(url).json()]
        assert bodies == ["waiting edit", "cleared edit", "Old body"]
    for who in (other_user, None):
        r = client_for(who).get(url)
        assert r.status_code == 200
        assert [x["body"] for x in r.json()] == ["cleared edit", "Old body"]
        assert "waiting edit" not in r.content.decode()


def test_unpublish_keeps_the_latest_version_as_the_draft(user):
    post, _ = published_image_post(user)
    services.post_edit(post_id=post.pk, actor=user, changes={"body": "waiting"})
    services.post_unpublish(post_id=post.pk, actor=user)
    post.refresh_from_db()
    assert (post.status, post.body, post.public_revision_id, post.pending_revision_id) == (
        "draft",
        "waiting",
        None,
        None,
    )
    assert not post.revisions.filter(status__in=["pending", "held"]).exists()
    assert AiReview.objects.filter(post=post).count() == 0
