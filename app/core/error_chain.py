"""An unexpected exception, as a log line can carry it: types and frames, never values.

A 500 must be debuggable from the log alone, yet an exception's message, its frames' local
variables and the source lines around them may hold personal data or SQL (an e-mail in a
unique violation's detail, a value in an f-string). So each exception of the chain (causes,
contexts, SQLAlchemy's wrapped originals, exception-group members) is described by its
type, its SQLSTATE where it has one (a code, not data), and the frames it passed through as
file, line and function only. No message, no locals, no source text.
"""

import os
import sys
from types import TracebackType
from typing import Any

from app.core.outage import exception_links

MAX_FRAMES = 40  # per exception, innermost kept: the middleware stack above adds little
MAX_EXCEPTIONS = 10


def type_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _short_path(filename: str) -> str:
    """The file relative to the import root it was loaded from (`app/routers/x.py`,
    `starlette/routing.py`): the same in every deployment, and shorter."""
    roots = sorted((p for p in sys.path if p), key=len, reverse=True)
    for root in roots:
        prefix = root.rstrip(os.sep) + os.sep
        if filename.startswith(prefix):
            return filename[len(prefix) :]
    return filename


def _frames(tb: TracebackType | None) -> list[dict[str, Any]]:
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append(
            {"file": _short_path(code.co_filename), "line": tb.tb_lineno, "function": code.co_name}
        )
        tb = tb.tb_next
    return frames


def describe(exc: BaseException) -> list[dict[str, Any]]:
    """The exceptions behind `exc`, outermost first, each with its frames (outermost first,
    as in a printed traceback)."""
    described = []
    for link in exception_links(exc, into_groups=True)[:MAX_EXCEPTIONS]:
        frames = _frames(link.__traceback__)
        entry: dict[str, Any] = {"type": type_name(link), "frames": frames[-MAX_FRAMES:]}
        if len(frames) > MAX_FRAMES:
            entry["frames_omitted"] = len(frames) - MAX_FRAMES
        sqlstate = getattr(link, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate:
            entry["sqlstate"] = sqlstate
        described.append(entry)
    return described
