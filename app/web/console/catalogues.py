"""The catalogues in the console: every console role reads them; an admin changes them.

Each form is looked at before it is kept: "Preview" runs the change through the API's own
service in a rolled-back savepoint and shows what the gate would answer differently
(app.services.catalogue.impact); "Save", carrying the previewed values, calls that same
service for real (one write path, one audit entry, as `PUT /v1/...` would). The body is
validated by the API's own model: a refusal shows the API's words and keeps nothing.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import RedirectResponse, Response

from app.core.db import SessionDep
from app.models.catalogue import KEY_PATTERN, Purpose, Recipient
from app.services.catalogue import controller as controller_identity
from app.services.catalogue import entries as catalogue
from app.services.retention import rules
from app.web.console.catalogue_forms import FORMS, Form, as_form
from app.web.console.common import Posted, Viewer, attempt, reader, render, writer

router = APIRouter(include_in_schema=False)
Reader = Annotated[Viewer, Depends(reader("catalogue:read"))]
# The forms are an admin's: another role is refused the page as it is the POST (403).
Editor = Annotated[Viewer, Depends(reader("catalogue:write"))]
Admin = Annotated[Posted, Depends(writer("catalogue:write"))]
EntryKey = Annotated[str | None, Query(pattern=KEY_PATTERN)]
SHOWN = 200  # catalogues are short lists an admin writes by hand
NOT_CARRIED = frozenset({"csrf", "step"})


@router.get("/console/catalogues")
async def console_catalogues(
    session: SessionDep,
    viewer: Reader,
    done: Annotated[str | None, Query(pattern=r"^[a-z]{1,20}$")] = None,
) -> Response:
    purposes = await catalogue.list_keyed(session, Purpose, limit=SHOWN, cursor=None)
    recipients = await catalogue.list_keyed(session, Recipient, limit=SHOWN, cursor=None)
    policies = await catalogue.list_policies(session, limit=SHOWN, cursor=None)
    return render(
        "catalogues.html",
        viewer,
        purposes=purposes.items,
        recipients=recipients.items,
        policies=policies.items,
        retention=await rules.list_rules(session),
        controller=await controller_identity.shown(session),
        done=FORMS[done].saved if done in FORMS else None,
    )


async def _current(session: SessionDep, form: Form, key: str | None) -> dict[str, list[str]]:
    """The form filled in with what is stored now (blank for a new entry)."""
    if form.kind == "controller":
        return as_form(await controller_identity.shown(session))
    if key is None:
        return {}
    if form.kind == "retention":
        rule = await rules.get_rule(session, key)
        return {"key": [key], **as_form({"rule": rule.rule, "months": rule.months})}
    row: Purpose | Recipient | None = None
    if form.kind == "purpose":
        row = await catalogue.entry(session, Purpose, key)
    elif form.kind == "recipient":
        row = await catalogue.entry(session, Recipient, key)
    return {"key": [key], **(as_form(row.model_dump()) if row is not None else {})}


async def form_page(
    session: SessionDep,
    viewer: Viewer,
    form: Form,
    values: dict[str, list[str]],
    status: int = 200,
    **extra: Any,
) -> Response:
    carried = [(n, v) for n, vs in values.items() if n not in NOT_CARRIED for v in vs]
    return render(
        "catalogue_form.html",
        viewer,
        status,
        form=form,
        values=values,
        value=lambda name: (values.get(name) or [""])[0],
        carried=carried,
        purposes=await catalogue.descriptions(session, Purpose),
        categories=await rules.list_rules(session),
        **extra,
    )


async def _submitted(session: SessionDep, posted: Posted, form: Form) -> Response:
    """Save: the service writes, back to the catalogues. Otherwise a preview: the page
    again, with what the change would do and a Save button carrying the same values."""
    principal = posted.viewer.principal
    if posted.one("step") == "save":
        _, error, status = await attempt(session, lambda: form.save(session, principal, posted))
        if error is None:
            return RedirectResponse(f"/console/catalogues?done={form.kind}", status_code=303)
        return await form_page(session, posted.viewer, form, posted.form, status, error=error)
    impact, error, status = await attempt(session, lambda: form.preview(session, principal, posted))
    return await form_page(
        session, posted.viewer, form, posted.form, status, impact=impact, error=error
    )


def _routes(form: Form) -> None:
    """The form's page and its POST, for each catalogue the API writes."""

    async def page(session: SessionDep, viewer: Editor, key: EntryKey = None) -> Response:
        return await form_page(session, viewer, form, await _current(session, form, key))

    async def submit(session: SessionDep, posted: Admin) -> Response:
        return await _submitted(session, posted, form)

    page.__name__ = f"console_{form.kind}_form"
    submit.__name__ = f"console_{form.kind}_submit"
    router.get(f"/console/catalogues/{form.kind}")(page)
    router.post(f"/console/catalogues/{form.kind}")(submit)


for _form in FORMS.values():
    _routes(_form)
