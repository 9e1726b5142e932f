"""Importing this package registers every table on SQLModel.metadata."""

from app.models import api_key, audit, basis, catalogue, decision, state, subject  # noqa: F401
