"""The console's catalogue forms, read into the API's own models and handed to the API's own
services: a form's fields are the JSON body's (a blank field is left out, as an API client
would leave it out), and its key is checked by the pattern the API's path checks.

Each form has two calls: `preview` (app.services.catalogue.impact: the change applied in a
rolled-back savepoint, the gate asked before and after) and `save` (the service the API's
route calls). Nothing here decides what is allowed.
"""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from app.core.auth import Principal
from app.core.db import SessionDep
from app.models.catalogue import CatalogueKey, PolicyCreate, PurposeUpdate, RecipientUpdate
from app.models.controller import ControllerUpdate
from app.models.retention import RetentionRuleUpdate
from app.services.catalogue import controller as controller_identity
from app.services.catalogue import entries as catalogue
from app.services.catalogue import impact
from app.services.retention import rules
from app.web.console.common import Posted

Call = Callable[[SessionDep, Principal, Posted], Awaitable[Any]]
TICKED = "true"  # a checkbox's value when ticked; a browser sends nothing when it is not


class Keyed(BaseModel):
    """The entry's key, checked as the API's path parameter is (`KEY_PATTERN`)."""

    key: CatalogueKey


@dataclass(frozen=True)
class Form:
    kind: str
    title: str
    saved: str  # what the catalogues page says once it is saved
    preview: Call
    save: Call


def as_form(data: Mapping[str, Any]) -> dict[str, list[str]]:
    """Stored values as a form posts them (a list per field; a false or empty one absent)."""
    out: dict[str, list[str]] = {}
    for name, value in data.items():
        if value is None or value is False or value == []:
            continue
        if value is True:
            out[name] = [TICKED]
        elif isinstance(value, list):
            out[name] = [str(v) for v in value]
        else:
            out[name] = [str(value)]
    return out


def _fields(posted: Posted, *names: str) -> dict[str, Any]:
    return {n: v for n in names if (v := posted.one(n)) is not None}


def _key(posted: Posted) -> str:
    return Keyed.model_validate({"key": posted.one("key") or ""}).key


def _purpose(posted: Posted) -> tuple[str, PurposeUpdate]:
    body = _fields(posted, "description", "consent_valid_months")
    body |= {
        "allowed_bases": posted.many("allowed_bases"),
        "direct_marketing": posted.one("direct_marketing") == TICKED,
    }
    return _key(posted), PurposeUpdate.model_validate(body)


def _recipient(posted: Posted) -> tuple[str, RecipientUpdate]:
    body = _fields(posted, "name", "role", "country", "transfer_safeguard")
    body |= {
        "inside_eea_uk": posted.one("inside_eea_uk") == TICKED,
        "purposes": posted.many("purposes"),
    }
    return _key(posted), RecipientUpdate.model_validate(body)


def _policy(posted: Posted) -> PolicyCreate:
    body = _fields(posted, "version", "published_at", "url", "text_sha256")
    return PolicyCreate.model_validate(
        body | {"reconsent_purposes": posted.many("reconsent_purposes")}
    )


def _retention(posted: Posted) -> tuple[str, RetentionRuleUpdate]:
    return _key(posted), RetentionRuleUpdate.model_validate(_fields(posted, "rule", "months"))


def _controller(posted: Posted) -> ControllerUpdate:
    names = ("name", "email", "address", "phone", "dpo_email", "representative")
    return ControllerUpdate.model_validate(_fields(posted, *names, "supervisory_authority"))


async def _preview_purpose(s: SessionDep, p: Principal, posted: Posted) -> Any:
    key, data = _purpose(posted)
    return await impact.purpose_change(s, p, key=key, data=data)


async def _save_purpose(s: SessionDep, p: Principal, posted: Posted) -> Any:
    key, data = _purpose(posted)
    return await catalogue.put_purpose(s, p, key=key, data=data)


async def _preview_recipient(s: SessionDep, p: Principal, posted: Posted) -> Any:
    key, data = _recipient(posted)
    return await impact.recipient_change(s, p, key=key, data=data)


async def _save_recipient(s: SessionDep, p: Principal, posted: Posted) -> Any:
    key, data = _recipient(posted)
    return await catalogue.put_recipient(s, p, key=key, data=data)


async def _preview_policy(s: SessionDep, p: Principal, posted: Posted) -> Any:
    return await impact.policy_change(s, p, data=_policy(posted))


async def _save_policy(s: SessionDep, p: Principal, posted: Posted) -> Any:
    return await catalogue.create_policy(s, p, data=_policy(posted))


async def _preview_retention(s: SessionDep, p: Principal, posted: Posted) -> Any:
    key, data = _retention(posted)
    return await impact.retention_change(s, p, category=key, data=data)


async def _save_retention(s: SessionDep, p: Principal, posted: Posted) -> Any:
    key, data = _retention(posted)
    return await rules.put_rule(s, p, category=key, data=data)


async def _preview_controller(s: SessionDep, p: Principal, posted: Posted) -> Any:
    return await impact.controller_change(s, p, data=_controller(posted))


async def _save_controller(s: SessionDep, p: Principal, posted: Posted) -> Any:
    return await controller_identity.put(s, p, data=_controller(posted))


FORMS = {
    form.kind: form
    for form in (
        Form("purpose", "A purpose", "The purpose is saved.", _preview_purpose, _save_purpose),
        Form(
            "recipient",
            "A recipient",
            "The recipient is saved.",
            _preview_recipient,
            _save_recipient,
        ),
        Form(
            "policy",
            "Publish a policy version",
            "The policy version is recorded.",
            _preview_policy,
            _save_policy,
        ),
        Form(
            "retention",
            "A retention rule",
            "The retention rule is saved.",
            _preview_retention,
            _save_retention,
        ),
        Form(
            "controller",
            "The controller's identity",
            "The controller's identity is saved.",
            _preview_controller,
            _save_controller,
        ),
    )
}
