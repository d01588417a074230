"""Create the demo superuser once and print how to log in (``make run`` calls it)."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a demo superuser 'admin' with a random password (kept in var/) and print it."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        User = get_user_model()
        secret_file = settings.VAR_DIR / "demo-admin-password"
        user = User.objects.filter(username=username).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser(username=username, email="", password=password)
            settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
            secret_file.write_text(password)
            secret_file.chmod(0o600)
        elif secret_file.exists() and user.check_password(secret_file.read_text().strip()):
            password = secret_file.read_text().strip()
        else:
            self.stdout.write(f"Admin account '{username}' exists (its password was changed; not shown).")
            return
        self.stdout.write(f"Admin login: username '{username}', password '{password}'")
