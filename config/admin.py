"""Admin pieces shared by the apps."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records that are evidence or logs: viewable, never added, edited or deleted in the admin."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def review_link(post_id, text: str | None = None) -> str:
    """A link to the post's page in the review queue."""
    if not post_id:
        return "—"
    url = reverse("admin:moderation_reviewqueue_change", args=[post_id])
    return format_html('<a href="{}">{}</a>', url, text or post_id)
