from django.apps import AppConfig


class ContentConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "content"

    def ready(self) -> None:
        # Declare this app's actors on the broker in every process (config/queueing.py sends by name).
        import content.tasks  # noqa: F401
