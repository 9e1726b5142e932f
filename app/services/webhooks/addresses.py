"""Where a webhook may go (SSRF). Outside development a URL must be https:// and every
address its host resolves to must be a public one; the call then connects to the address
that was checked (the name only in the Host header and TLS SNI), so a DNS answer that
changes between the check and the connection (rebinding) is never followed. The check runs
before every call, not only at registration."""

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

Resolver = Callable[[str, int], Awaitable[list[str]]]


class AddressRefused(Exception):
    """A URL or address the service will not call; the message says why (no secrets)."""


@dataclass(frozen=True)
class Target:
    """One call's destination: the URL with the checked address in place of the name."""

    url: str
    host_header: str
    sni_hostname: str | None
    address: str = ""
    port: int = 0
    path: str = "/"
    tls: bool = False


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


def refusal(address: str) -> str | None:
    """Why an address may not be called, or None for a public one."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global or ip.is_multicast:
        return "not a public address"
    return None


def check_url(url: str, *, development: bool) -> None:
    """At registration: the scheme, a host, and (outside development) no literal address
    or `localhost` that the delivery check would refuse anyway."""
    parts = urlsplit(url)
    allowed = ("https", "http") if development else ("https",)
    if parts.scheme not in allowed:
        raise AddressRefused("the URL must be https://" + (" or http://" if development else ""))
    if not parts.hostname or parts.username or parts.password:
        raise AddressRefused("the URL needs a host and no credentials")
    if development:
        return
    if parts.hostname == "localhost" or parts.hostname.endswith(".localhost"):
        raise AddressRefused("the URL's host is a loopback name")
    try:
        why = refusal(parts.hostname)
    except ValueError:
        return  # a name: resolved and checked before every call
    if why:
        raise AddressRefused(f"the URL's host is {why}")


async def target(url: str, *, development: bool, resolve: Resolver) -> Target:
    """The checked address to connect to for `url` (every resolved address must pass)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [host] if _literal(host) else await resolve(host, port)
    except OSError:
        raise AddressRefused("the host name does not resolve") from None
    if not addresses:
        raise AddressRefused("the host name does not resolve")
    if not development:
        for address in addresses:
            why = refusal(address)
            if why:
                raise AddressRefused(f"the host resolves to {why}")
    chosen = sorted(addresses, key=lambda a: ":" in a)[0]  # IPv4 first
    netloc = f"[{chosen}]" if ":" in chosen else chosen
    default = parts.port is None
    url_at = parts._replace(netloc=netloc if default else f"{netloc}:{port}").geturl()
    host_header = parts.netloc.rsplit("@", 1)[-1]
    sni = host if parts.scheme == "https" and not _literal(host) else None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url_at, host_header, sni, chosen, port, path, parts.scheme == "https")


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
