"""Monthly partitions of `decisions` and `audit_entries` that were exported and detached."""

from datetime import date, datetime

from sqlalchemy import BigInteger, Column, Identity
from sqlmodel import Field, SQLModel

from app.models.base import timestamp_field


class PartitionArchive(SQLModel, table=True):
    """A month the retention job exported to a file (recorded here with the file's SHA-256
    and row count) and then detached, in one transaction. For audit entries the positions
    it held let verification step over the archived part of the chain."""

    __tablename__ = "partition_archives"

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    parent: str = Field(max_length=63)
    partition: str = Field(max_length=63, unique=True)
    month: date
    path: str = Field(max_length=1000)
    sha256: str = Field(max_length=64)
    rows: int = Field(sa_type=BigInteger)
    first_position: int | None = Field(default=None, sa_type=BigInteger)
    last_position: int | None = Field(default=None, sa_type=BigInteger)
    archived_at: datetime = timestamp_field()
