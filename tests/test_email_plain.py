"""The plain-address fast path (app.models.text.is_plain_address) answers exactly as
email-validator does: every address it takes, email-validator takes and normalises to the
same lower-cased string, and the `Email` type accepts and refuses what it did before."""

from typing import Annotated

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator, BeforeValidator, EmailStr, TypeAdapter, ValidationError

from app.models.text import Email, _bare_address, is_plain_address, normalise_email

pytestmark = pytest.mark.pg_independent  # see pyproject.toml's markers

# The type as it was before the fast path: email-validator for every address.
REFERENCE = TypeAdapter(
    Annotated[EmailStr, BeforeValidator(_bare_address), AfterValidator(normalise_email)]
)
EMAIL = TypeAdapter(Email)

EDGE_CASES = [
    "ada@example.com",
    "Ada.Lovelace+news@Example.CO.UK",
    "  ada@example.com  ",
    "a_b-c@sub-domain.example.org",
    "x@a.b",  # one-letter labels and top-level domain
    "x@example.c0m",  # a digit inside the top-level domain, ending in a letter
    "x@example.123",  # top-level domain of digits: refused
    "x@example.com1",
    "x@localhost",  # no dot
    "x@mail.local",  # special-use names
    "x@example.test",
    "x@host.invalid",
    "x@1.0.0.127.in-addr.arpa",
    "x@example.onion",
    "x@ab--cd.com",  # R-LDH label
    "x@xn--bcher-kva.example",  # IDNA
    "x@xn--zz.example",  # not valid IDNA
    "x@-example.com",
    "x@example-.com",
    "x@example.-com",
    "x@example.com-",
    "x@example..com",
    "x@.example.com",
    "x@example.com.",
    ".x@example.com",
    "x.@example.com",
    "x..y@example.com",
    "x@" + "a" * 63 + ".com",
    "x@" + "a" * 64 + ".com",
    "x@example." + "a" * 63,
    "x@example." + "a" * 64,
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "x@" + ".".join(["a" * 61] * 4) + ".com",  # a domain over 253 characters
    "x@" + ".".join(["a" * 60] * 4) + ".co",
    "y" * 64 + "@" + ".".join(["b" * 60] * 3) + "." + "c" * 5,  # 254 and more
    "x@@example.com",
    "x@exa@mple.com",
    "@example.com",
    "x@",
    "x",
    "Ada <ada@example.com>",
    "ada@exämple.com",
    "adä@example.com",
    '"ada"@example.com',
    "ada!#$%&'*/=?^`{|}~@example.com",
    "ada@[127.0.0.1]",
    "ada@example.com\n",
    "\rada@example.com",
    " " * 250 + "ada@example.com",
    "\tada@example.com\t",
]


def _reference_normalised(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def _through(adapter: TypeAdapter, value: str) -> str | None:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


@pytest.mark.parametrize("address", EDGE_CASES)
def test_edge_cases_answer_as_email_validator_does(address):
    if is_plain_address(address):
        assert _reference_normalised(address) == address.lower()
    assert _through(EMAIL, address) == _through(REFERENCE, address)


def test_the_fast_path_takes_the_common_addresses():
    taken = ["ada@example.com", "Ada.Lovelace+news@Example.CO.UK", "x@a.b", "x@example.c0m"]
    assert all(is_plain_address(a) for a in taken)
    assert not any(is_plain_address(a) for a in ["x@example.test", "x@xn--bcher-kva.example"])


LABEL_CHARS = "abcXYZ019-"
LOCAL_CHARS = "abcXYZ019_+-.!#"


@st.composite
def addresses(draw):
    """Near-plain addresses: mostly valid, often broken in one of the ways that matter."""
    local = draw(st.text(LOCAL_CHARS, min_size=0, max_size=70))
    labels = draw(st.lists(st.text(LABEL_CHARS, min_size=0, max_size=66), min_size=1, max_size=5))
    tld = draw(
        st.sampled_from(["com", "uk", "c0m", "123", "test", "local", "arpa", "a", "xn--p1ai"])
        | st.text(LABEL_CHARS, min_size=0, max_size=65)
    )
    return local + "@" + ".".join([*labels, tld])


@settings(max_examples=3000, deadline=None)
@given(addresses())
def test_generated_addresses_answer_as_email_validator_does(address):
    if is_plain_address(address):
        assert _reference_normalised(address) == address.lower(), address
    assert _through(EMAIL, address) == _through(REFERENCE, address), address


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=40))
def test_any_text_answers_as_before(value):
    assert _through(EMAIL, value) == _through(REFERENCE, value)
