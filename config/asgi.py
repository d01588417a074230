"""The ASGI entry point: production serves the web with ``gunicorn -k asgi config.asgi:application``
(see ``make prod-up``), so that held ``/api/v1/events`` connections (SSE) cost a socket each, not a
thread. Everything else runs as under WSGI (``config.wsgi`` stays for runserver and WSGI servers)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_asgi_application()
