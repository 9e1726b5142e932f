"""`consent-api webhooks test KEY`: a signed `ping` to a registered webhook endpoint, and
what it answered (the same signing, address checks and no-redirect rule as deliveries)."""

import argparse
import asyncio
from typing import Any

from app.cli.common import CliError, database_url, in_transaction, migrate
from app.core.config import current_settings


async def _signing(session: Any, *, key: str) -> Any:
    from app.models.base import utcnow
    from app.services.webhooks import endpoints

    settings = current_settings()
    found = await endpoints.signing(session, settings, now=utcnow(), key=key)
    if key not in found:
        await endpoints.exists(session, key)  # 404 if unknown
        raise CliError(f"webhook endpoint `{key}` is disabled or its secret is unreadable")
    return found[key]


def _test(args: argparse.Namespace) -> None:
    from app.core.errors import NotFound
    from app.services.webhooks.sender import ping

    settings = current_settings()
    url = database_url(settings)
    migrate(url)
    try:
        endpoint = asyncio.run(in_transaction(url, settings, _signing, key=args.key))
    except NotFound:
        raise CliError(f"no webhook endpoint `{args.key}`") from None
    status, said = asyncio.run(ping(settings, endpoint))
    answer = " ".join(said.split())[:200]
    if status is None:
        raise CliError(f"{args.key}: {said}")
    print(f"{args.key}: HTTP {status}" + (f" {answer}" if answer else ""))
    if not 200 <= status < 300:
        raise SystemExit(1)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser(
        "webhooks",
        help="webhook endpoints: send a signed test message",
        description="Webhooks out: the endpoints are set up with the API"
        " (PUT /v1/webhook-endpoints/KEY); this checks one from the command line.",
    )
    actions = group.add_subparsers(dest="action", required=True)
    test = actions.add_parser(
        "test",
        help="send a signed `ping` to an endpoint and print its answer",
        description="POSTs {id, type: ping, timestamp, data: {}} signed with the endpoint's"
        " secret(s), as a delivery would be, and prints the HTTP status and the start of"
        " the answer (one line; exit 1 unless 2xx).",
    )
    test.add_argument("key", help="the endpoint's key, as in PUT /v1/webhook-endpoints/KEY")
    test.set_defaults(func=_test)
