from django.apps import AppConfig


class ModerationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "moderation"

    def ready(self) -> None:
        # Declare this app's actors on the broker in every process (config/queueing.py sends by name).
        import moderation.tasks  # noqa: F401
