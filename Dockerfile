# One image for web, workers and the scheduler; the command chooses the role (see docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=config.settings POSTFLOW_VAR_DIR=/app/var DEBUG=false

RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libpq5 libnginx-mod-rtmp \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 postflow

WORKDIR /app
COPY requirements/ requirements/
# pdqhash is built from source (against numpy 2): the compiler is installed for that step only.
RUN apt-get update && apt-get install -y --no-install-recommends g++ \
 && pip install -r requirements/prod.txt \
 && apt-get purge -y --auto-remove g++ && rm -rf /var/lib/apt/lists/*
COPY . .
# Static files are collected at build time with a throwaway key; the real one comes from the environment.
RUN SECRET_KEY=build-only python manage.py collectstatic --noinput -v0 \
 && mkdir -p /app/var && chown -R postflow:postflow /app/var

USER postflow
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=4)" || exit 1
# The web runs under gunicorn's ASGI worker: held /api/v1/events (SSE) connections cost a socket, not a thread.
CMD ["gunicorn", "-c", "config/gunicorn_conf.py", "config.asgi:application", "-k", "asgi", "--bind", "0.0.0.0:8000", \
     "--workers", "3", "--worker-connections", "4000", "--timeout", "60", "--access-logfile", "-"]
