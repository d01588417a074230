from django.contrib import admin

from moderation.models import PlatformSettings
from moderation.platform import invalidate_platform_settings


@admin.register(PlatformSettings)
class PlatformSettingsAdmin(admin.ModelAdmin):
    """Superusers only; every change is audited."""

    list_display = ("__str__", "moderation_mode", "ai_review_threshold", "ai_revoke_threshold", "report_threshold",
                    "post_processing_enabled", "updated_at", "updated_by")
    readonly_fields = ("updated_at", "updated_by")

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    has_change_permission = has_view_permission

    def has_add_permission(self, request):
        return request.user.is_superuser and not PlatformSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        from moderation.models import ModerationAction, ModerationDecision

        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
        invalidate_platform_settings()
        ModerationDecision.objects.create(
            post=None, moderator=request.user, action=ModerationAction.SETTINGS,
            reason="Platform settings changed",
            details={f: str(form.cleaned_data.get(f)) for f in form.changed_data},
        )
