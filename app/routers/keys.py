"""The public signing keys (JWKS): no API key. Receipts and consent proofs leave the service
(a person, an auditor, a regulator) and must be verifiable by whoever holds one, with
nothing secret; the keys are public by nature and change only on a rotation.

Included without the authentication default (app.main's PUBLIC_ROUTERS), and named in
app.core.guard's PUBLIC_PATHS, which the guard and app.core.auth_first read: public by
declaration, in two places a test compares (tests/test_auth_default.py), never by omission.
"""

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from app.core.driver import JSON
from app.core.signing import get_signer

router = APIRouter(tags=["accountability"])
# Cacheable, but not for long: after a rotation the new key must reach verifiers within
# minutes (a retired key stays listed, so what was signed before still verifies).
CACHE_CONTROL = "public, max-age=300"
KEYS_PATH = "/v1/keys"
WELL_KNOWN_PATH = "/.well-known/jwks.json"


class Jwks(BaseModel):
    """A JSON Web Key Set (RFC 7517): the current key first, then retired ones."""

    keys: list[dict[str, Any]]


def _jwks(request: Request) -> Response:
    body = Jwks(**get_signer(request.app.state.settings).jwks()).model_dump_json()
    return Response(body, media_type=JSON, headers={"Cache-Control": CACHE_CONTROL})


@router.get(KEYS_PATH, response_model=Jwks)
async def list_signing_keys(request: Request) -> Response:
    """The public keys (JWKS) that verify checkpoints, consent receipts and consent proofs
    (ES256; match a JWS header's `kid`). No API key needed."""
    return _jwks(request)


@router.get(WELL_KNOWN_PATH, response_model=Jwks)
async def get_jwks(request: Request) -> Response:
    """The same JWKS at its conventional address, for JOSE libraries that fetch it there."""
    return _jwks(request)
