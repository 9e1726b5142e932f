"""Which kind of database outage an exception is, if any, and whether a write may have landed.

Every way the database can be out of reach is a 503 with Retry-After (app.core.errors), and
the problem says honestly what became of the request (issue 14, "production fails closed"):

- Nothing was sent, so nothing was stored: the connection could not be made (refused, no
  Unix socket, DNS, TLS, connect time-out, the server refusing it at start-up or shutting
  down), no pooled connection was free in time, or the server rolled the statement back
  and said so (deadlock, serialisation failure, lock or resource limits).
- A statement may have reached the database, so a write may have been stored: the
  connection was lost, or a statement timed out or was cancelled, after it was sent.

Classification is by kind, not by the classes seen so far: any OSError or time-out raised
while a connection is being made is "unreachable", wherever in asyncpg or SQLAlchemy it
arose, because the places that make connections say so (`connecting()`): the app's asyncpg
pool (app.core.driver) and every SQLAlchemy engine (app.core.db). That mark is what tells a
connect time-out (nothing sent) from a command time-out (maybe stored): both are the same
TimeoutError. `classify` walks the whole exception chain (causes, contexts, SQLAlchemy's
`.orig`, exception groups) once.
"""

import errno
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError


class Outage(StrEnum):
    UNREACHABLE = "unreachable"  # no connection could be made
    EXHAUSTED = "exhausted"  # every pooled connection was in use for the whole wait
    BUSY = "busy"  # the server refused the statement for now and rolled it back
    LOST = "lost"  # the connection died after statements were sent
    TIMED_OUT = "timed_out"  # a sent statement timed out (command or statement timeout)
    CANCELLED = "cancelled"  # a sent statement was cancelled on request (an operator's)

    @property
    def maybe_stored(self) -> bool:
        """Whether a write may have been stored (the statement may have reached the server)."""
        return self in (Outage.LOST, Outage.TIMED_OUT, Outage.CANCELLED)


_PHASE = "_consent_api_connect_phase"  # set on an exception raised while connecting

# Errors that only the making of a connection can raise: nothing was sent, marked or not.
_CONNECT_ONLY = (ConnectionRefusedError, socket.gaierror, socket.herror, ssl.SSLError)
_NETWORK_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.ETIMEDOUT}
)
# SQLSTATEs of a database out of reach or overloaded (not of a wrong request), most
# specific first: 08 connection exceptions, 53 insufficient resources, 57 operator
# intervention, 55P03 lock_not_available, 40001 / 40P01 serialisation failure and deadlock.
_SQLSTATE_KINDS: tuple[tuple[str, Outage], ...] = (
    ("08001", Outage.UNREACHABLE),  # the client could not establish the connection
    ("08004", Outage.UNREACHABLE),  # the server rejected the connection
    ("08", Outage.LOST),
    ("53300", Outage.UNREACHABLE),  # too many connections: refused at start-up
    ("53", Outage.BUSY),
    ("57014", Outage.CANCELLED),  # query_canceled: a cancel request, or (below) a time-out
    ("57P03", Outage.UNREACHABLE),  # cannot connect now: starting up or shutting down
    ("57P", Outage.LOST),  # admin or crash shutdown, database dropped, idle timeout
    ("55P03", Outage.BUSY),
    ("40001", Outage.BUSY),
    ("40P01", Outage.BUSY),
)
# asyncpg says that a connection can no longer be used only in words: closed, a pool
# closing, or a protocol put out of step by a message the server sent unasked (a fast
# shutdown's FATAL "terminating connection" reaching an idle pooled connection before its
# socket closes): the next statement then meets "cannot switch to state ...". A real
# misuse (two statements at once on one connection) is an InterfaceError "another
# operation is in progress" raised before that point, and stays a bug (a 500).
_BROKEN_WORDS = ("is closed", "was closed", "is closing", "cannot switch to", "unexpected state")


@contextmanager
def connecting(*, exhausted: bool = False) -> Iterator[None]:
    """Around the making or borrowing of a connection: whatever is raised inside it was
    raised before any statement was sent. `exhausted`: the pool had no free connection
    when the wait began, so a time-out here means it stayed full."""
    try:
        yield
    except Exception as exc:
        if not hasattr(exc, _PHASE):  # the innermost mark is the truest one
            setattr(exc, _PHASE, Outage.EXHAUSTED if exhausted else Outage.UNREACHABLE)
        raise


def exception_links(exc: BaseException, *, into_groups: bool = False) -> list[BaseException]:
    """`exc` and every exception behind it, outermost first: causes, contexts (unless the
    raise said `from None`), SQLAlchemy's wrapped `.orig`, and with `into_groups` the
    members of exception groups. Each exception once, even in a cycle."""
    found: list[BaseException] = []
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        link = todo.pop(0)
        if id(link) in seen:
            continue
        seen.add(id(link))
        found.append(link)
        behind = [
            getattr(link, "orig", None),  # SQLAlchemy's wrapper and its asyncpg adapter
            link.__cause__,
            None if link.__suppress_context__ else link.__context__,
        ]
        if into_groups and isinstance(link, BaseExceptionGroup):
            behind = [*link.exceptions, *behind]
        todo.extend(e for e in behind if isinstance(e, BaseException))
    return found


def classify(exc: BaseException) -> Outage | None:
    """The outage `exc` is, or None when it is not one (a bug, a wrong password, a bad
    request: those are not the database being away). An exception group is an outage when
    each of its members is one."""
    links = exception_links(exc)
    phase: Outage | None = next((getattr(e, _PHASE) for e in links if hasattr(e, _PHASE)), None)
    kinds: list[Outage] = []
    for link in links:
        if isinstance(link, BaseExceptionGroup):
            members = [classify(member) for member in link.exceptions]
            if members and all(members):
                kinds.extend(m for m in members if m is not None)
            continue
        kind = _kind_of(link, connecting=phase is not None)
        if kind is not None:
            kinds.append(kind)
    if not kinds:
        return None
    if phase is not None:
        return phase  # raised while connecting: nothing can have been sent
    # Honesty first: if any link says a statement may have been sent, the write may be stored.
    return next((k for k in kinds if k.maybe_stored), kinds[0])


def _kind_of(exc: BaseException, *, connecting: bool) -> Outage | None:
    """One exception's kind, without looking behind it."""
    if isinstance(exc, PoolTimeoutError):  # SQLAlchemy's queue for a pooled connection
        return Outage.EXHAUSTED
    if isinstance(exc, DBAPIError):
        return Outage.LOST if exc.connection_invalidated else None
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate == "57014" and "timeout" in str(exc):  # statement_timeout's own words
            return Outage.TIMED_OUT
        return next((k for prefix, k in _SQLSTATE_KINDS if sqlstate.startswith(prefix)), None)
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError):
        broken = any(words in str(exc) for words in _BROKEN_WORDS)
        return Outage.LOST if broken else None  # otherwise a misuse of the driver: a bug
    if isinstance(exc, TimeoutError):
        return Outage.TIMED_OUT
    if isinstance(exc, _CONNECT_ONLY) or (isinstance(exc, OSError) and connecting):
        return Outage.UNREACHABLE
    if isinstance(exc, ConnectionError):  # reset, aborted, broken pipe: after sending
        return Outage.LOST
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return Outage.UNREACHABLE
    return None


def is_unavailable(exc: BaseException) -> bool:
    """A database outage of any kind (never the client's fault)."""
    return classify(exc) is not None
