"""``metadata.blocked_media`` (a JSON key media wrote) becomes the ``Post.blocked_media`` column."""

from django.db import migrations, models


def key_to_column(apps, schema_editor):
    Post = apps.get_model("content", "Post")
    for post in Post.objects.filter(metadata__has_key="blocked_media").only("pk", "metadata"):
        flagged = bool(post.metadata.pop("blocked_media", False))
        Post.objects.filter(pk=post.pk).update(blocked_media=flagged, metadata=post.metadata)


def column_to_key(apps, schema_editor):
    Post = apps.get_model("content", "Post")
    for post in Post.objects.filter(blocked_media=True).only("pk", "metadata"):
        Post.objects.filter(pk=post.pk).update(metadata={**post.metadata, "blocked_media": True})


class Migration(migrations.Migration):
    dependencies = [
        ("content", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="post",
            name="blocked_media",
            field=models.BooleanField(
                default=False,
                help_text="An attached file is on the moderators' blocklist: publishing sends it to quarantine.",
            ),
        ),
        migrations.RunPython(key_to_column, column_to_key),
    ]
