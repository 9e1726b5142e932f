"""Settings from the environment (prefix CONSENT_)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
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

    # issue 9b: bulk import, PgBouncer, read replica
    import_max_bytes: int = 64 * 1024 * 1024  # POST /v1/subjects/import body limit
    import_batch_size: int = 5000
    # Off behind PgBouncer < 1.21 in transaction mode (no protocol-level prepared
    # statements): asyncpg's statement cache and named statements are not used then.
    db_prepared_statements: bool = True
    # A read-only replica for reports, exports, audit listings and audiences; unset: the
    # primary. Replicas lag: nothing that decides or writes reads from it.
    read_database_url: str | None = None

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> "Settings":
        if self.env == "development":
            return self
        if self.secret_key.get_secret_value() == DEV_SECRET:
            raise ValueError("CONSENT_SECRET_KEY must be set outside development")
        if self.signing_key_pem is None:
            raise ValueError("CONSENT_SIGNING_KEY_PEM must be set outside development")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
