"""The ``Moderators`` group with exactly what reviewing needs: read posts, media, runs, AI reviews,
reports and decisions; manage the blocklist; and ``content.review_post`` to decide. Nothing that
edits users, groups or platform settings."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Moderators"
PERMISSIONS = [
    ("content", "view_post"),
    ("content", "review_post"),
    ("content", "view_report"),
    ("media", "view_media"),
    ("media", "view_processorrun"),
    ("moderation", "view_aireview"),
    ("moderation", "view_moderationdecision"),
    ("moderation", "view_blockedmedia"),
    ("moderation", "add_blockedmedia"),
    ("moderation", "change_blockedmedia"),
    ("moderation", "view_reviewqueue"),
]


def create_group(apps, schema_editor):
    # Permissions are normally created after all migrations ran (post_migrate); make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    perms = []
    for app_label, codename in PERMISSIONS:
        perms.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.set(perms)


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("moderation", "0002_reviewqueue"),
        ("content", "0001_initial"),
        ("media", "0002_joblock"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
