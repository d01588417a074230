"""Posts and reports, read-only: every change to a post goes through the services (the API, or the
review queue's decisions in ``moderation.admin``)."""

from django.contrib import admin

from config.admin import ReadOnlyAdmin, review_link
from content.models import Notification, Post, Report, Webhook, WebhookDelivery


@admin.register(Post)
class PostAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "type",
        "status",
        "moderation_state",
        "author",
        "title",
        "created_at",
        "published_at",
    )
    list_filter = ("status", "moderation_state", "type")
    search_fields = ("title", "body", "author__username")
    list_select_related = ("author",)
    readonly_fields = ["review", *(f.name for f in Post._meta.fields)]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="moderation")
    def review(self, post):
        return review_link(post.pk, "review page")


@admin.register(Report)
class ReportAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "post_link", "reporter", "reason", "detail")
    list_filter = ("reason",)
    search_fields = ("post__id", "reporter__username", "detail")
    list_select_related = ("reporter",)
    readonly_fields = ("post", "reporter", "reason", "detail", "created_at")
    show_full_result_count = False

    @admin.display(description="post")
    def post_link(self, report):
        return review_link(report.post_id, "review page")


@admin.register(Webhook)
class WebhookAdmin(ReadOnlyAdmin):
    """Creators' webhooks, read-only. The signing secret is never shown (it is stored encrypted and
    left out of every admin page)."""

    list_display = ("id", "user", "url", "events", "is_active", "consecutive_failures", "created_at")
    list_filter = ("is_active",)
    search_fields = ("url", "user__username")
    list_select_related = ("user",)
    exclude = ("secret_encrypted",)
    readonly_fields = tuple(f.name for f in Webhook._meta.fields if f.name != "secret_encrypted")
    show_full_result_count = False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "webhook",
        "event_type",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
    )
    list_filter = ("status", "event_type")
    readonly_fields = tuple(f.name for f in WebhookDelivery._meta.fields)
    show_full_result_count = False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "user", "type", "post", "reason", "read_at", "emailed_at")
    list_filter = ("type",)
    search_fields = ("user__username", "reason")
    list_select_related = ("user",)
    readonly_fields = tuple(f.name for f in Notification._meta.fields)
    show_full_result_count = False
