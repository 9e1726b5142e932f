"""API keys: stored only as SHA-256 hashes of high-entropy random tokens."""

import uuid
from datetime import datetime

from sqlmodel import Field, SQLModel

from app.models.base import timestamp_field, utcnow


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    role: str = Field(max_length=20)
    key_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = timestamp_field(default_factory=utcnow)
    revoked_at: datetime | None = timestamp_field(default=None, nullable=True)
