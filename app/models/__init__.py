"""Importing this package registers every table on SQLModel.metadata."""

from app.models import (  # noqa: F401
    api_key,
    audit,
    basis,
    catalogue,
    change,
    consent,
    controller,
    decision,
    imports,
    optout,
    page_session,
    partitions,
    rights,
    state,
    subject,
    sync,
    webhook,
)
