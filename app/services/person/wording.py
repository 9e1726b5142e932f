"""The words the preference page shows beside an "I agree" button. Each is also the notice
stored with the consent it records (Art 7(1): the controller proves what the person agreed
to), so the page and the write build it with the same function, from the catalogue."""

import hashlib
import re
from collections.abc import Sequence

from app.models.text import replace_unsafe

_SECTION_REF = re.compile(r"\s*\(§[^)]*\)\s*$")
WITHDRAW_ANY_TIME = (
    "I can withdraw this at any time on this page or from the link in any e-mail you send me."
)
# Countries as a sentence names them (ISO 3166-1 alpha-2); a code not listed is named by its
# code. The catalogue holds codes, and a person should not have to decode "US".
COUNTRY_NAMES = {
    "AE": "the United Arab Emirates",
    "AU": "Australia",
    "BR": "Brazil",
    "CA": "Canada",
    "CH": "Switzerland",
    "CN": "China",
    "IL": "Israel",
    "IN": "India",
    "JP": "Japan",
    "KR": "South Korea",
    "MX": "Mexico",
    "NZ": "New Zealand",
    "PH": "the Philippines",
    "SG": "Singapore",
    "US": "the United States",
    "ZA": "South Africa",
}


def plain(description: str) -> str:
    """A catalogue description without its policy clause reference."""
    return _SECTION_REF.sub("", description)


def _shown(description: str) -> str:
    # A control character in the catalogue's description is replaced (as the page shows
    # it): the notice must pass the checks every recorded notice passes.
    return replace_unsafe(plain(description), allow_newline=True)


def notice_text(controller: str, description: str) -> str:
    """The exact wording shown beside a "give consent" button, and stored with the event,
    naming the controller as its catalogue row does now (a new name is a new notice)."""
    return (
        f"I agree that {controller} may use my name and e-mail address for: "
        f"{_shown(description)}. {WITHDRAW_ANY_TIME}"
    )


def consent_period(months: int | None) -> str | None:
    """How long a consent for a purpose lasts, in plain words (None: until withdrawn)."""
    if months is None:
        return None
    return f"Your consent lasts {months} month{'' if months == 1 else 's'}."


def country_name(code: str) -> str:
    return COUNTRY_NAMES.get(code, f"the country with the code {code}")


def transfer_notice(controller: str, recipient_name: str, country: str, uses: Sequence[str]) -> str:
    """The explicit transfer consent's wording (§8, Art 49(1)(a)): who receives the data,
    where, for what, and what the transfer means for the person, in the first person like
    every other notice. The catalogue's `explicit_consent` safeguard means the transfer
    rests on this consent alone: no adequacy decision or other safeguard covers it."""
    where = country_name(country)
    what = "; ".join(_shown(u) for u in uses) or "the purposes this page lists"
    return (
        f"I agree that {controller} may send my name, e-mail address and "
        f"company name to {replace_unsafe(recipient_name)} in {where}, for: {what}. "
        f"I understand that {where} is outside the UK and the European Economic Area, and "
        "that this transfer is not covered by a UK adequacy decision or by other safeguards: "
        "my data there may not have the same protection as in the UK. For example, it may "
        "be harder for me to use my rights, and the authorities there may be able to see "
        f"my data. {WITHDRAW_ANY_TIME}"
    )


def notice_sha(notice: str) -> str:
    return hashlib.sha256(notice.encode()).hexdigest()
