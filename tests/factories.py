import factory
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.authtoken.models import Token

from content.models import Poll, PollOption, Post, PostStatus, PostType, Report
from media.models import Media, MediaKind, ProcessingStatus, ProcessorRun, Upload
from moderation.models import AiReview, BlockedMedia, Decision, ModerationDecision


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.test")
    password = factory.django.Password("correct-horse-battery")

    @factory.post_generation
    def token(self, create, extracted, **kwargs):
        if create:
            Token.objects.get_or_create(user=self)


class EstablishedUserFactory(UserFactory):
    """An account old enough for its reports to count (``REPORT_MIN_ACCOUNT_AGE_HOURS``)."""

    date_joined = factory.LazyFunction(lambda: timezone.now() - timezone.timedelta(days=30))


class StaffFactory(UserFactory):
    is_staff = True


class PostFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Post

    author = factory.SubFactory(UserFactory)
    type = PostType.TEXT
    title = factory.Sequence(lambda n: f"Post {n}")
    body = "Hello there."

    class Params:
        published = factory.Trait(
            status=PostStatus.PUBLISHED, published_at=factory.LazyFunction(timezone.now)
        )


class PollFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Poll
        skip_postgeneration_save = True

    post = factory.SubFactory(PostFactory, type=PostType.POLL, body="")
    question = "Tea or coffee?"
    multiple_choice = False

    @factory.post_generation
    def options(self, create, extracted, **kwargs):
        if create:
            for i, text in enumerate(extracted or ["Tea", "Coffee", "Neither"]):
                PollOption.objects.create(poll=self, text=text, position=i)


class ReportFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Report

    post = factory.SubFactory(PostFactory, published=True)
    reporter = factory.SubFactory(UserFactory)
    reason = "spam"


class MediaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Media

    post = factory.SubFactory(PostFactory, type=PostType.IMAGE, body="")
    owner = factory.LazyAttribute(lambda o: o.post.author)
    kind = MediaKind.IMAGE
    original_key = factory.LazyAttribute(lambda o: f"media/{o.owner.pk}/x/original.jpg")
    mime_type = "image/jpeg"
    size_bytes = 1000
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    processing_status = ProcessingStatus.READY


class UploadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Upload

    owner = factory.SubFactory(UserFactory)
    filename = "photo.jpg"
    content_type = "image/jpeg"
    kind = "image"
    declared_size = 1000
    storage_key = factory.LazyAttribute(
        lambda o: f"uploads/{o.owner.pk}/{factory.Faker('uuid4').evaluate(None, None, {'locale': None})}"
    )
    expires_at = factory.LazyFunction(lambda: timezone.now() + timezone.timedelta(hours=1))


class ProcessorRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProcessorRun

    media = factory.SubFactory(MediaFactory)
    processor = "image"
    result = "succeeded"


class AiReviewFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AiReview

    post = factory.SubFactory(PostFactory)
    provider = "stub"
    overall_score = 0.1
    scores = factory.LazyAttribute(lambda o: {"stub": o.overall_score})
    decision = Decision.PUBLISH


class ModerationDecisionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModerationDecision

    post = factory.SubFactory(PostFactory)
    moderator = factory.SubFactory(StaffFactory)
    action = "approve"


class BlockedMediaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BlockedMedia

    sha256 = factory.Sequence(lambda n: f"{n:064x}")
