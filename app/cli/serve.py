"""`consent-api serve` and `consent-api migrate`: the database brought up to date, then the
API served behind uvicorn's hardened options, never with a hash key that made none of the
stored hashes."""

import argparse
import asyncio
import ipaddress
import os
import signal
import sys
from typing import Any

from app.cli.common import database_url, in_transaction, log_file, migrate, quiet_chatter, where
from app.core.config import Settings, current_settings, get_settings, use_settings


def _migrate_command(args: argparse.Namespace) -> None:
    settings = current_settings()
    location = where(settings)
    migrate(database_url(settings))
    print(f"Database migrated: {location}")


def _announce(args: argparse.Namespace, location: str, settings: Settings) -> None:
    base = f"http://{args.host}:{args.port}"
    print(f"consent-api: data in {location}")
    print(f"consent-api: serving {base} ({args.workers} worker{'s' * (args.workers > 1)})")
    print(f"consent-api: API docs at {base}/docs")
    print(f"consent-api: server log in {log_file(settings)}; Ctrl+C stops", flush=True)


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from app.core.observability import configure_logging

    settings = _links_point_here(args.host, args.port, current_settings())
    location = where(settings)
    # The embedded server belongs to this process; workers inherit CONSENT_DATABASE_URL
    # and connect to it, so `--workers N` shares one server.
    url = database_url(settings)
    migrate(url)
    _refuse_a_wrong_hash_key(url, settings)
    _announce(args, location, settings)
    configure_logging(settings.log_level)
    quiet_chatter(settings)  # configure_logging reset the root logger, not these
    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default handler the
    # process would die without running atexit, leaving the embedded server up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        "app.main:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_config=None,
        **hardened_uvicorn_options(settings),
    )


def listen_url(host: str, port: int) -> str:
    """The http:// address a browser on this machine reaches `serve --host H --port P` at: an
    unspecified address (0.0.0.0, ::) listens on loopback too, and an IPv6 literal needs
    brackets."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"http://{host}:{port}"  # a host name, such as localhost
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{port}"


def _links_point_here(host: str, port: int, settings: Settings) -> Settings:
    """In development, with CONSENT_PUBLIC_BASE_URL unset, links to the person's pages point
    where this server listens (API.md), not at the setting's default port. The workers read
    their settings from the environment (uvicorn's factory, in this process or spawned ones),
    so the address goes there; an explicit CONSENT_PUBLIC_BASE_URL always wins."""
    explicit = "public_base_url" in settings.model_fields_set and settings.public_base_url.strip()
    if settings.env != "development" or explicit:
        return settings
    os.environ["CONSENT_PUBLIC_BASE_URL"] = listen_url(host, port)
    get_settings.cache_clear()
    settings = get_settings()
    use_settings(settings)
    return settings


def _refuse_a_wrong_hash_key(url: str, settings: Settings) -> None:
    """Stop, in one line, before serving with a key that made none of the stored hashes."""
    from app.services.access.key_fingerprints import WrongHashKey, check_hash_key

    try:
        asyncio.run(in_transaction(url, settings, check_hash_key, settings=settings))
    except WrongHashKey as exc:
        print(f"consent-api: {exc}", file=sys.stderr)
        sys.exit(1)


def hardened_uvicorn_options(settings: Any) -> dict[str, Any]:
    """issue 14: the HTTP layer's limits. httptools with a bounded request head (size and
    time: app.core.http_protocol; plain httptools took four 64 MB headers); idle keep-alive
    connections close after `http_keep_alive_seconds`; no `server: uvicorn` header;
    Host and X-Forwarded-* believed only from `trusted_proxies`."""
    return {  # the protocol is named, not passed, so that `--workers N` can pickle it
        "http": "app.core.http_protocol:BoundedHeadHttpToolsProtocol",
        "timeout_keep_alive": settings.http_keep_alive_seconds,
        "limit_concurrency": settings.http_max_concurrency,
        "server_header": False,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": ",".join(settings.trusted_proxies) or None,
        "timeout_graceful_shutdown": 10,
    }


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="migrate, then serve the API")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes, sharing one database (default: %(default)s)",
    )
    serve.set_defaults(func=_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=_migrate_command)
