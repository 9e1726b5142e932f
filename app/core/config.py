"""Settings from the environment (prefix CONSENT_)."""

import re
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "development-only-secret-change-me"  # noqa: S105 - refused outside development
MIN_SECRET_LENGTH = 32  # issue 14: production refuses short or repetitive secrets
MIN_SECRET_DISTINCT = 10


def _weak(secret: str) -> bool:
    return len(secret) < MIN_SECRET_LENGTH or len(set(secret)) < MIN_SECRET_DISTINCT


def _too_weak(variable: str) -> str:
    return (
        f"{variable} is too weak: use at least {MIN_SECRET_LENGTH} random characters"
        " (e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONSENT_", extra="ignore")

    env: Literal["development", "production"] = "development"
    database_url: str | None = None
    data_dir: Path = Path(".consent-data")
    # The root secret: per-use keys are derived from it (app.core.keys); it also keys the
    # HMAC of e-mails while CONSENT_EMAIL_HASH_KEYS is unset.
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    # "id:secret,id:secret", newest first: the newest hashes e-mails from now on, the others
    # only match what they hashed (rotate with `consent-api keys rotate-email-hash`). Ids are
    # 0-32767; 0 is the key used while this is unset (the root secret).
    email_hash_keys: SecretStr | None = None
    mailchimp_webhook_secret: SecretStr | None = None
    # PEM of the Ed25519 key that signs audit checkpoints and consent receipts.
    # Unset in development: generated once into the data directory.
    signing_key_pem: SecretStr | None = None
    max_body_bytes: int = 1024 * 1024
    auth_cache_seconds: float = 5.0
    db_pool_size: int = 10
    log_level: str = "INFO"
    # issue 9: the hottest routes skip FastAPI's route walk and dependency solving
    # (app.core.direct); false serves them through FastAPI like every other route.
    direct_routes: bool = True

    # The controller's identity as the policy gives it (§1, §11). Read once, by migration
    # 0019, to seed the `controller` catalogue row; from then on that row is the only source
    # (PUT /v1/controller changes it) and these settings are not read again.
    controller_name: str = "JI Group"
    controller_email: str = "datacontroller@jisoftware.co.uk"
    controller_phone: str = "+44-(0)1234-214004"
    controller_address: str = "Kings House, 245 Ampthill Road, Bedford, MK42 9AZ, UK"
    supervisory_authority: str = "Information Commissioner's Office (ICO), https://ico.org.uk"

    # --- issue 10: MailChimp and SurveyMonkey sync (`consent-api sync ...`) ---
    # MailChimp Marketing API v3: the key ends in `-<dc>`, which names the base URL
    # https://<dc>.api.mailchimp.com/3.0 unless CONSENT_MAILCHIMP_BASE_URL says otherwise.
    mailchimp_api_key: SecretStr | None = None
    mailchimp_base_url: str | None = None
    mailchimp_list_id: str | None = None
    mailchimp_purpose: str = "email_campaigns"
    mailchimp_recipient: str | None = "mailchimp"
    # A merge field for the company, if the list has one (FNAME and LNAME always go).
    mailchimp_company_field: str | None = None
    surveymonkey_access_token: SecretStr | None = None
    surveymonkey_base_url: str = "https://api.surveymonkey.com/v3"
    surveymonkey_contact_list_id: str | None = None
    surveymonkey_purpose: str = "surveys"
    surveymonkey_recipient: str | None = "surveymonkey"
    sync_batch_size: int = 500  # members per MailChimp batch call; feed entries per batch
    sync_max_connections: int = 10  # MailChimp allows 10 simultaneous connections
    sync_max_attempts: int = 8  # per remote call, for 429, 5xx and dropped connections
    sync_backoff_seconds: float = 1.0  # first backoff; doubles, with jitter, up to a minute
    sync_poll_seconds: float = 5.0  # between passes, without --once
    # A worker started without --once reconciles the whole list with the gate's audience
    # when the last reconciliation is older than this many hours; 0 turns it off.
    sync_reconcile_hours: float = 24.0

    # issue 14: outages, greedy clients, hostile input.
    # Client-side limits so that a stopped or frozen PostgreSQL gives a prompt 503, never a hang.
    db_connect_timeout_seconds: float = 3.0
    # How long a worker's start-up waits for a database it cannot reach (restarting, failing
    # over) before it gives up; `serve` itself checks the database before it starts workers.
    db_startup_wait_seconds: float = 300.0
    db_command_timeout_seconds: float = 10.0  # a frozen server: the driver gives up
    db_statement_timeout_ms: int = 8000  # server side: a runaway statement is cancelled
    db_pool_timeout_seconds: float = 5.0  # queue wait for a pooled connection, then 503
    # Test each pooled connection on checkout: one extra round trip per request, so off by
    # default; a connection broken by a restart is dropped with the whole pool on first use.
    db_pool_pre_ping: bool = False
    retry_after_seconds: int = 5
    readyz_timeout_seconds: float = 2.0
    # /readyz says `degraded` when the oldest unsealed audit entry is older than this.
    seal_stall_seconds: float = Field(default=300.0, gt=0)
    # Proxies whose Host / X-Forwarded-* headers are believed (uvicorn forwarded_allow_ips).
    trusted_proxies: list[str] = []
    # Failed authentications per client address before 429 (per process, sliding window).
    auth_failures_allowed: int = 20
    auth_failure_window_seconds: float = 60.0
    # uvicorn: idle keep-alive connections closed after this; request headers limited in size.
    http_keep_alive_seconds: int = 5
    http_max_header_bytes: int = 16 * 1024
    http_max_concurrency: int | None = None  # 503 past this many open connections/tasks
    http_head_timeout_seconds: float = 10.0  # a request head must arrive within this
    # Signing keys retired by a rotation: their public PEMs (several blocks allowed). They
    # stay in GET /v1/keys so that receipts and checkpoints signed before still verify.
    signing_previous_keys_pem: str | None = None

    # issue 9b: bulk import, PgBouncer, read replica
    import_max_bytes: int = 64 * 1024 * 1024  # POST /v1/subjects/import body limit
    import_batch_size: int = 5000
    # Off behind PgBouncer < 1.21 in transaction mode (no protocol-level prepared
    # statements): asyncpg's statement cache and named statements are not used then.
    db_prepared_statements: bool = True
    # A read-only replica for reports, exports, audit listings and audiences; unset: the
    # primary. Replicas lag: nothing that decides or writes reads from it.
    read_database_url: str | None = None
    # Past this replay lag (or while it does not answer) the replica is left aside: its reads
    # go to the primary, and /readyz says `degraded` (still 200).
    read_max_lag_seconds: float = Field(default=30.0, gt=0)

    # Webhooks out (app.services.webhooks): POSTs at once per endpoint, feed entries claimed
    # per endpoint at a time (the next claim once half are sent), a call's time limit, and
    # the retry schedule (exponential from the first pause, with jitter, capped; given up as
    # failed after the window).
    webhook_max_in_flight: int = Field(default=16, ge=1, le=256)
    webhook_batch_size: int = Field(default=500, ge=1, le=5000)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_retry_first_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_retry_hours: float = Field(default=24.0, gt=0)
    webhook_poll_seconds: float = Field(default=0.5, gt=0)

    @model_validator(mode="after")
    def _refuse_development_setup(self) -> "Settings":
        """Outside development the service fails closed: no embedded server, no default or
        weak secret. Every problem is named at once, so one restart mends them all."""
        if self.env == "development":
            return self
        problems = []
        if not self.database_url:
            problems.append(
                "CONSENT_DATABASE_URL must be set outside development"
                " (the embedded PostgreSQL is for development only)"
            )
        secret = self.secret_key.get_secret_value()
        if secret == DEV_SECRET:
            problems.append("CONSENT_SECRET_KEY must be set outside development")
        elif _weak(secret):
            problems.append(_too_weak("CONSENT_SECRET_KEY"))
        # The webhook's only credential (MailChimp cannot send a key): the same rules.
        webhook = self.mailchimp_webhook_secret
        if webhook is not None and _weak(webhook.get_secret_value()):
            problems.append(_too_weak("CONSENT_MAILCHIMP_WEBHOOK_SECRET"))
        if self.signing_key_pem is None:
            problems.append("CONSENT_SIGNING_KEY_PEM must be set outside development")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # Issue 12: the person's own door (signed links, one-click unsubscribe, preference page).
    # Where the links point; never taken from a request's Host header. Outside development
    # links are refused until it is an https:// URL (RFC 8058 section 3.1). Unset in
    # development, `serve` sets it to the address it listens on (app.cli.serve).
    public_base_url: str = "http://127.0.0.1:8000"
    # "kid:secret,kid:secret": the first signs, all verify (rotate by putting a new key first
    # and dropping an old one once its links have expired). Unset: one key derived from
    # CONSENT_SECRET_KEY.
    link_keys: SecretStr | None = None
    unsubscribe_link_days: int = Field(default=90, ge=1, le=366)
    preference_link_days: int = Field(default=14, ge=1, le=90)
    # Per token, per worker process (in memory): requests allowed in a sliding window.
    link_rate_limit: int = Field(default=30, ge=1)
    link_rate_window_seconds: float = Field(default=60.0, gt=0)

    # Double opt-in (and rights requests started from the preference page): where the
    # service sends e-mail, `smtp://user:pass@host:587` (STARTTLS when the server offers it)
    # or `smtps://...:465` (TLS from the start). Unset: `confirm_by_email` is refused (503).
    smtp_url: SecretStr | None = None
    # Days a double opt-in (and a rights request's confirmation link) waits for the person.
    double_opt_in_days: int = Field(default=7, ge=1, le=90)

    @field_validator("link_keys")
    @classmethod
    def _link_keys_format(cls, value: SecretStr | None) -> SecretStr | None:
        for item in value.get_secret_value().split(",") if value else []:
            kid, sep, secret = item.strip().partition(":")
            if not sep or not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", kid) or len(secret) < 32:
                raise ValueError(
                    "CONSENT_LINK_KEYS must be `kid:secret,...`: ids of 1-16 letters, digits,"
                    " `_` or `-`; secrets of at least 32 characters"
                )
        return value

    @field_validator("email_hash_keys")
    @classmethod
    def _email_hash_keys_format(cls, value: SecretStr | None) -> SecretStr | None:
        ids = []
        for item in value.get_secret_value().split(",") if value else []:
            kid, sep, secret = item.strip().partition(":")
            if not sep or not re.fullmatch(r"\d{1,5}", kid) or int(kid) > 32767:
                raise ValueError("CONSENT_EMAIL_HASH_KEYS must be `id:secret,...` with ids 0-32767")
            if _weak(secret) and not (kid == "0"):
                raise ValueError(_too_weak("each key of CONSENT_EMAIL_HASH_KEYS"))
            ids.append(int(kid))
        if len(ids) != len(set(ids)):
            raise ValueError("CONSENT_EMAIL_HASH_KEYS names one id twice")
        return value

    # Issue 11: retention and the auditor's pages.
    # Days a prospect's data is kept after `interest_ceased_at` (§7); 0 erases at once.
    retention_prospect_grace_days: int = Field(default=0, ge=0, le=3650)
    # Subjects erased per transaction by the retention sweep.
    retention_sweep_batch: int = Field(default=500, ge=1, le=10000)
    # Lifetime of an auditor's page session (login form or signed link), in minutes.
    report_session_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # Security measures (Art 32) listed in the record of processing activities (Art 30(1)(g)).
    security_measures: list[str] = [
        "API keys per client with one role each, stored as SHA-256 hashes",
        "TLS between clients and the service (terminated at the deployment's proxy)",
        "Hash-chained audit log with signed checkpoints (tamper evidence)",
        "Opt-outs kept as keyed hashes (HMAC-SHA-256) of e-mail addresses",
        "Erasure removes personal fields everywhere, leaving a tombstone",
        "Personal data kept in the EEA/UK unless a transfer consent or safeguard applies",
    ]


class SettingsError(SystemExit):
    """A settings problem as one line: field names and messages, never a value (issue 14)."""


def settings_error_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        field = ".".join(str(p) for p in error.get("loc", ()))
        name = f"CONSENT_{field.upper()}: " if field else ""
        parts.append(name + str(error.get("msg", "invalid")).removeprefix("Value error, "))
    return "consent-api: invalid settings: " + "; ".join(parts)


# The settings of the app, the command or the worker in whose context code runs: set once at
# each edge (every request, from the app's own settings object; a command or a worker, from
# the settings it read), never read from the environment by the code it calls.
_current: ContextVar[Settings] = ContextVar("consent_api_settings")


def use_settings(settings: Settings) -> None:
    """Make `settings` the ones `current_settings()` returns in this context (and in the tasks
    and threads started from it)."""
    _current.set(settings)


def current_settings() -> Settings:
    """The settings handed down by the edge this code runs under (app, command, worker)."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError(
            "no settings in this context: the app, each command and each worker hand theirs"
            " down with app.core.config.use_settings"
        ) from None


@lru_cache
def get_settings() -> Settings:
    """Settings read from the environment: for the edges only (a process's entry point)."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(settings_error_line(exc)) from None
