"""Importing this package registers every table on SQLModel.metadata."""

from app.models import api_key, audit, catalogue, subject  # noqa: F401
