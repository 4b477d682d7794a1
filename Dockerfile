# One image for every role: web (gunicorn), worker and beat (celery); compose.yaml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files are built into the image (whitenoise serves them). The values below exist only so the
# production settings load during the build; every container gets its real secrets from the environment.
RUN SHOP_ENV=production SECRET_KEY=build-only ALLOWED_HOSTS=build \
    CARDKEY_MASTER_KEYS="v1:$(python -c 'import base64; print(base64.b64encode(bytes(32)).decode())')" \
    CARDKEY_INDEX_KEY="$(python -c 'import base64; print(base64.b64encode(bytes(32)).decode())')" \
    EVIDENCE_SIGNING_KEY="$(python -c 'import base64; print(base64.b64encode(bytes(32)).decode())')" \
    python manage.py collectstatic --noinput \
 && useradd --system --uid 10001 shop && mkdir -p /data && chown shop /data

USER shop
EXPOSE 8000
# Sync workers, two per core, behind a buffering proxy: see compose.yaml and docs/performance.md.
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4", "--worker-class", "sync"]
