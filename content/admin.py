"""Posts and reports, read-only: every change to a post goes through the services (the API, or the
review queue's decisions in ``moderation.admin``)."""

from django.contrib import admin

from config.admin import ReadOnlyAdmin, review_link
from content.models import Post, Report


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
