# consent-api: production image. Point it at PostgreSQL with CONSENT_DATABASE_URL;
# without it the service runs its own embedded server in CONSENT_DATA_DIR.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CONSENT_DATA_DIR=/var/lib/consent-api

RUN useradd --system --create-home --uid 10001 consent \
    && mkdir -p /var/lib/consent-api && chown consent /var/lib/consent-api

WORKDIR /srv/consent-api
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install -c constraints.txt .

USER consent
EXPOSE 8000
# Production: set CONSENT_ENV=production, CONSENT_DATABASE_URL, CONSENT_SECRET_KEY and
# CONSENT_SIGNING_KEY_PEM (the service refuses default secrets outside development).
CMD ["consent-api", "serve", "--host", "0.0.0.0", "--port", "8000"]
