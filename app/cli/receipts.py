"""`consent-api verify-receipt FILE|-`: a consent receipt (compact JWS) or a consent proof
verified offline, against a JWKS from a file or fetched from the service's public address.
Needs no settings, no database and no API key: anyone holding a receipt can run it."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.cli.common import CliError

WELL_KNOWN = "/.well-known/jwks.json"
FETCH_TIMEOUT_SECONDS = 10.0


def _read(path: str, what: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the {what} {path}: {exc.__class__.__name__}") from None


def jwks_url(base: str) -> str:
    """The JWKS address of a service: BASE/.well-known/jwks.json, or the URL itself when it
    already names a JWKS (…/jwks.json, …/v1/keys)."""
    base = base.strip()
    if not base.startswith(("http://", "https://")):
        raise CliError(f"--url must be an http:// or https:// address, not {base!r}")
    if base.rstrip("/").endswith(("/jwks.json", "/v1/keys")):
        return base.rstrip("/")
    return base.rstrip("/") + WELL_KNOWN


def _fetch(url: str) -> Any:
    import httpx

    try:
        response = httpx.get(url, timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot fetch the JWKS from {url}: {exc.__class__.__name__}") from None
    if response.status_code != 200:
        raise CliError(f"cannot fetch the JWKS from {url}: HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise CliError(f"{url} did not answer a JWKS (not JSON)") from None


def _jwks(args: argparse.Namespace) -> Any:
    if args.url:
        return _fetch(jwks_url(args.url))
    if args.jwks == "-" and args.file == "-":
        raise CliError("the receipt and the JWKS cannot both come from stdin")
    try:
        return json.loads(_read(args.jwks, "JWKS"))
    except ValueError:
        raise CliError(f"invalid: malformed JWKS in {args.jwks} (not JSON)") from None


def verify_receipt(args: argparse.Namespace) -> None:
    """One verdict line and the verified claims (JSON) on stdout; one line and exit 1 else."""
    from app.services.consent.verification import VerificationFailed, load_jwks, verify_text

    text = _read(args.file, "receipt")
    try:
        verdict = verify_text(text, load_jwks(_jwks(args)))
    except VerificationFailed as exc:
        raise CliError(f"invalid: {exc}") from None
    print(verdict.summary)
    print(json.dumps(verdict.claims, indent=2, sort_keys=True, ensure_ascii=False))


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    verify = sub.add_parser(
        "verify-receipt",
        help="verify a consent receipt or a consent proof against the public keys",
        description="Verify, offline, a consent receipt (the compact JWS of GET"
        " /v1/consent-events/{id}/receipt with Accept: application/jose) or a consent proof"
        " (GET /v1/subjects/{id}/consent-proof) against a JWKS. Prints `valid ...` and the"
        " signed claims; exits 1 with one line saying why otherwise.",
    )
    verify.add_argument("file", metavar="FILE|-", help="the receipt or proof; - reads stdin")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--jwks", metavar="FILE", help="a JWKS file (GET /v1/keys saved)")
    source.add_argument(
        "--url", metavar="BASE", help=f"the service's address: fetches BASE{WELL_KNOWN}"
    )
    verify.set_defaults(func=verify_receipt, needs_settings=False)
