# consent-api: production image. It fails closed: CONSENT_ENV=production is set here, so the
# service refuses to start (one line naming every missing setting) until it is given
#   CONSENT_DATABASE_URL     postgresql+asyncpg://user:password@host:5432/consent
#   CONSENT_SECRET_KEY       32+ random characters (keys e-mail hashes, link keys)
#   CONSENT_SIGNING_KEY_PEM  Ed25519 private key, PEM (signs receipts and audit checkpoints)
#   CONSENT_PUBLIC_BASE_URL  https://consent.example.com (where the person's links point)
# and, for the MailChimp webhook, CONSENT_MAILCHIMP_WEBHOOK_SECRET. It never starts the
# embedded PostgreSQL. `serve` migrates the database before it listens; with several
# replicas, run `consent-api migrate` once first (docs/compose.yaml shows how).
#
# Development in a container (the embedded PostgreSQL, development secrets) must be asked
# for out loud, with a volume so that replacing the container keeps the data:
#   docker run -e CONSENT_ENV=development -v consent-data:/var/lib/consent-api -p 8000:8000 IMAGE
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CONSENT_ENV=production \
    CONSENT_DATA_DIR=/var/lib/consent-api

RUN useradd --system --create-home --uid 10001 consent \
    && mkdir -p /var/lib/consent-api && chown consent /var/lib/consent-api

WORKDIR /srv/consent-api
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install -c constraints.txt .

# Used only by development (CONSENT_ENV=development): the embedded server's data directory.
VOLUME ["/var/lib/consent-api"]
USER consent
EXPOSE 8000
# Ready = the database answers (a degraded service, e.g. a stalled audit sealer, is still
# ready and says why in the body). No curl in the slim image: Python's urllib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status == 200 else 1)"]
CMD ["consent-api", "serve", "--host", "0.0.0.0", "--port", "8000"]
