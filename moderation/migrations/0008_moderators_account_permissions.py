"""The ``Moderators`` group also acts on accounts (DESIGN.md §11): see accounts and their standing,
warn/limit/suspend/restore them, read the account audit, and write internal notes."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Moderators"
PERMISSIONS = [
    ("moderation", "view_moderatedaccount"),
    ("moderation", "view_accountstanding"),
    ("moderation", "act_on_account"),
    ("moderation", "view_accountaction"),
    ("moderation", "view_moderatornote"),
    ("moderation", "add_moderatornote"),
]


def add_permissions(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for app_label, codename in PERMISSIONS:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def remove_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name=GROUP).first()
    if group is None:
        return
    for app_label, codename in PERMISSIONS:
        perm = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
        if perm:
            group.permissions.remove(perm)


class Migration(migrations.Migration):
    dependencies = [
        ("moderation", "0007_account_standing_notes_and_actions"),
        ("moderation", "0003_moderators_group"),
    ]

    operations = [migrations.RunPython(add_permissions, remove_permissions)]
