"""Audiences: the subjects the gate allows for a purpose (and recipient), for sync clients."""

import uuid

from sqlmodel import Field, SQLModel


class AudienceMember(SQLModel):
    subject_id: uuid.UUID
    email: str | None
    name: str | None
    company: str | None


class AudiencePage(SQLModel):
    items: list[AudienceMember]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


class GateResult(SQLModel):
    """The gate's answer for one subject at the moment of a push, with what may be pushed."""

    subject_id: uuid.UUID | None
    allowed: bool
    reasons: list[str]
    member: AudienceMember | None
    # MailChimp's subscriber key (MD5 of the lower-cased address) for a live subject, so a
    # denied one can be unsubscribed there without handing its address out.
    email_md5: str | None = None
    # The service's keyed hash of the address (HMAC, app.core.crypto): what logs name the
    # subject by; MailChimp's MD5 is unsalted and never logged. None once erased.
    email_hash: str | None = None
