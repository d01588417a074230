from django.contrib import admin

from content.models import Post, Report


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    list_display = ("id", "type", "status", "moderation_state", "author", "title", "created_at", "published_at")
    list_filter = ("status", "moderation_state", "type")
    search_fields = ("title", "body", "author__username")
    list_select_related = ("author",)
    readonly_fields = [f.name for f in Post._meta.fields]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # posts are soft-deleted through the API; evidence is kept


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ("post", "reporter", "reason", "created_at")
    list_filter = ("reason",)
    search_fields = ("post__id", "reporter__username", "detail")
    list_select_related = ("post", "reporter")
    readonly_fields = ("post", "reporter", "reason", "detail", "created_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
