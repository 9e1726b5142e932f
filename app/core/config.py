"""Settings from the environment (prefix CONSENT_)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "development-only-secret-change-me"  # noqa: S105 - refused outside development


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONSENT_", extra="ignore")

    env: Literal["development", "production"] = "development"
    database_url: str | None = None
    data_dir: Path = Path(".consent-data")
    # Keys the HMAC of e-mails (opt-outs, change feed); must be stable across restarts.
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    mailchimp_webhook_secret: SecretStr | None = None
    # PEM of the Ed25519 key that signs audit checkpoints and consent receipts.
    # Unset in development: generated once into the data directory.
    signing_key_pem: SecretStr | None = None
    max_body_bytes: int = 1024 * 1024
    auth_cache_seconds: float = 5.0
    db_pool_size: int = 10
    log_level: str = "INFO"

    controller_name: str = "JI Group"
    controller_email: str = "datacontroller@jisoftware.co.uk"
    controller_phone: str = "+44-(0)1234-214004"
    controller_address: str = "Kings House, 245 Ampthill Road, Bedford, MK42 9AZ, UK"
    supervisory_authority: str = "Information Commissioner's Office (ICO), https://ico.org.uk"

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> "Settings":
        if self.env == "development":
            return self
        if self.secret_key.get_secret_value() == DEV_SECRET:
            raise ValueError("CONSENT_SECRET_KEY must be set outside development")
        if self.signing_key_pem is None:
            raise ValueError("CONSENT_SIGNING_KEY_PEM must be set outside development")
        return self

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


@lru_cache
def get_settings() -> Settings:
    return Settings()
