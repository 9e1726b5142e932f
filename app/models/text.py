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

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import (
    AfterValidator,
    BeforeValidator,
    EmailStr,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

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


def _at_most_500(value: object) -> object:
    # Before a model's whitespace stripping: the limit holds for what was sent, as the
    # schema's maxLength says (a client must not learn that trailing blanks are free).
    if isinstance(value, str) and len(value) > 500:
        raise ValueError("at most 500 characters")
    return value


# A free-text reason or note: at most 500 characters as sent, no control or invisible ones.
SafeNote = Annotated[SafeLines, BeforeValidator(_at_most_500)]

REPLACEMENT = "\ufffd"


def replace_unsafe(value: str, *, allow_newline: bool = False) -> str:
    """`value` with every character `unsafe_characters` names replaced by U+FFFD (and, when
    newlines are allowed, CRLF made LF): for text the service keeps although nobody can be
    asked to correct it, such as the User-Agent a person's browser sent."""
    if allow_newline:
        value = value.replace("\r\n", "\n")
    if not unsafe_characters(value, allow_newline=allow_newline):
        return value
    return "".join(
        REPLACEMENT
        if ch not in ALLOWED_FORMAT
        and not (allow_newline and ch == "\n")
        and unicodedata.category(ch) in REFUSED_CATEGORIES
        else ch
        for ch in value
    )


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


# Most addresses are plain ASCII: a dot-atom local part of letters, digits and `_+-`, and a
# domain of letter-digit-hyphen labels ending in a letter. email-validator's general parser
# spends about 50 µs on each (most of an import row's validation); for these the answer is
# known without it. Every address `is_plain_address` accepts, email-validator accepts and
# normalises to the same lower-cased string (tests/test_email_plain.py checks generated and
# edge-case addresses against it); anything else still goes through email-validator.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")
_PLAIN_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]*[A-Za-z]"
)
_CR_LF = re.compile("[\r\n]")
MAX_ADDRESS, MAX_DOMAIN = 254, 253  # RFC 5321 4.5.3.1.3 (as email-validator counts), 1035


def is_plain_address(address: str) -> bool:
    local, at, domain = address.partition("@")
    if not at or len(address) > MAX_ADDRESS or len(local) > MAX_LOCAL_PART:
        return False
    if len(domain) > MAX_DOMAIN or "--" in domain:  # "xn--" (IDNA) and R-LDH labels
        return False
    if not (_PLAIN_LOCAL.fullmatch(local) and _PLAIN_DOMAIN.fullmatch(domain)):
        return False
    last = domain.rpartition(".")[2]
    if len(last) > 63 or last.startswith("-"):
        return False
    lowered = domain.lower()
    return not any(lowered == d or lowered.endswith("." + d) for d in SPECIAL_USE_DOMAIN_NAMES)


def _plain_or_validated(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    # pydantic refuses a CR or LF anywhere, even where strip() would remove it.
    if isinstance(value, str) and len(value) <= MAX_ADDRESS and not _CR_LF.search(value):
        address = value.strip()
        if is_plain_address(address):
            return address
    return handler(value)


# Validators run outside in: the bare-address check, then the plain fast path or
# email-validator, then lower-casing.
Email = Annotated[
    EmailStr,
    WrapValidator(_plain_or_validated),
    BeforeValidator(_bare_address),
    AfterValidator(normalise_email),
]
