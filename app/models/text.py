"""Free text and e-mail addresses as the service accepts them (issue 14).

Names and the other personal free-text fields refuse, with a 422, characters that can
forge or hide: C0/C1 controls (terminal escapes, NUL, CR; a newline only in an address),
bidi embeddings, overrides and isolates, invisible format characters (zero-width space,
word joiner, BOM, soft hyphen), line/paragraph separators, surrogates, private-use and
unassigned code points. Refused rather than stripped: silently altering a person's name
would store something they did not give. ZWNJ and ZWJ (U+200C/D) are kept: Persian,
Indic scripts and emoji need them and they cannot reorder text.

E-mail addresses are bare `local@domain`: a display name (`Ada <ada@x>`) is refused rather
than stripped, the local part is at most 64 octets (RFC 5321 4.5.3.1.1); IDN domains are
accepted (email-validator normalises them).
"""

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, EmailStr

ALLOWED_FORMAT = {"\u200c", "\u200d"}
REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
MAX_LOCAL_PART = 64


# In ASCII the refused categories come down to the C0 controls and DEL (category Cc).
_ASCII_CONTROL = re.compile("[\x00-\x1f\x7f]")
_ASCII_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f]")


def unsafe_characters(value: str, *, allow_newline: bool = False) -> list[str]:
    """The code points (as U+XXXX) that free text may not contain."""
    if value.isascii():  # most text: one regex search instead of a look-up per character
        control = _ASCII_CONTROL_BUT_NEWLINE if allow_newline else _ASCII_CONTROL
        if control.search(value) is None:
            return []
    bad = []
    for ch in value:
        if allow_newline and ch == "\n":
            continue
        if ch in ALLOWED_FORMAT:
            continue
        if unicodedata.category(ch) in REFUSED_CATEGORIES:
            bad.append(f"U+{ord(ch):04X}")
    return bad


def _safe_line(value: str) -> str:
    bad = unsafe_characters(value)
    if bad:
        raise ValueError(f"contains control or invisible characters ({', '.join(bad[:3])})")
    return value


def _safe_lines(value: str) -> str:
    bad = unsafe_characters(value, allow_newline=True)
    if bad:
        raise ValueError(f"contains control or invisible characters ({', '.join(bad[:3])})")
    return value


SafeLine = Annotated[str, AfterValidator(_safe_line)]
SafeLines = Annotated[str, AfterValidator(_safe_lines)]


def _bare_address(value: object) -> object:
    if isinstance(value, str):
        stripped = value.strip()
        if any(c in stripped for c in '<>"') or any(c.isspace() for c in stripped):
            raise ValueError("must be a bare address (local@domain), without a display name")
        if unsafe_characters(stripped):
            raise ValueError("contains control or invisible characters")
        local = stripped.rpartition("@")[0]
        if len(local.encode()) > MAX_LOCAL_PART:
            raise ValueError(f"the part before @ is longer than {MAX_LOCAL_PART} characters")
    return value


def normalise_email(value: str) -> str:
    return value.strip().lower()


Email = Annotated[EmailStr, BeforeValidator(_bare_address), AfterValidator(normalise_email)]
