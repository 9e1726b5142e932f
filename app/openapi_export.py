"""The OpenAPI document: what the app adds to FastAPI's (how to authenticate), and the
committed document's exact text (a test compares it with the app's)."""

import json
from typing import Any

from fastapi import FastAPI

from app.core.guard import SELF_AUTHENTICATING, is_public

SECURITY_SCHEME = "bearerAuth"
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "API key (cak_...)",
    "description": "An API key made with `consent-api keys create --role ROLE --name NAME`, "
    "sent as `Authorization: Bearer <api key>`. Each key has one role; a route the role may "
    "not call answers 403.",
}


def needs_key(path: str) -> bool:
    """Whether an operation on this path template takes the bearer key: the guard's own rule
    (app.core.guard), so the document cannot drift from what is enforced. The auditor's pages
    check a key themselves (or a page session), so they declare it too."""
    return not is_public(path) or path in SELF_AUTHENTICATING


def declare_security(spec: dict[str, Any]) -> None:
    """The HTTP bearer scheme, on every keyed operation and on no public one (probes, docs,
    public keys, the person's pages, the MailChimp webhook with its own `secret`). FastAPI
    cannot see it: authentication is the app's own dependency (app.core.auth), not a
    FastAPI security class, and stays so; the document says what that dependency reads."""
    spec.setdefault("components", {}).setdefault("securitySchemes", {})[SECURITY_SCHEME] = BEARER
    for path, methods in spec.get("paths", {}).items():
        for op in methods.values():
            if path in SELF_AUTHENTICATING:
                # A key, or none: without one the page answers its sign-in form (200).
                op["security"] = [{SECURITY_SCHEME: []}, {}]
            elif needs_key(path):
                op["security"] = [{SECURITY_SCHEME: []}]
            else:
                op.pop("security", None)


def render_openapi(app: FastAPI) -> str:
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
