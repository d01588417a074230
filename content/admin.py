"""Posts and reports, read-only: every change to a post goes through the services (the API, or the
review queue's decisions in ``moderation.admin``)."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from content.models import Post, Report


def _review_link(post_id) -> str:
    url = reverse("admin:moderation_reviewqueue_change", args=[post_id])
    return format_html('<a href="{}">review page</a>', url)


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
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
        return _review_link(post.pk)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # posts are soft-deleted through the API; evidence is kept


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ("created_at", "post_link", "reporter", "reason", "detail")
    list_filter = ("reason",)
    search_fields = ("post__id", "reporter__username", "detail")
    list_select_related = ("reporter",)
    readonly_fields = ("post", "reporter", "reason", "detail", "created_at")
    show_full_result_count = False

    @admin.display(description="post")
    def post_link(self, report):
        return _review_link(report.post_id)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
