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
