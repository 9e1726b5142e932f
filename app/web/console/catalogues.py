"""The catalogues in the console (read by every console role; changed by admin)."""

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from app.core.db import SessionDep
from app.models.catalogue import Purpose, Recipient
from app.services.catalogue import controller as controller_identity
from app.services.catalogue import entries as catalogue
from app.web.console.common import Viewer, reader, render

router = APIRouter(include_in_schema=False)
Reader = Annotated[Viewer, Depends(reader("catalogue:read"))]
SHOWN = 200  # catalogues are short lists an admin writes by hand


@router.get("/console/catalogues")
async def console_catalogues(session: SessionDep, viewer: Reader) -> Response:
    purposes = await catalogue.list_keyed(session, Purpose, limit=SHOWN, cursor=None)
    recipients = await catalogue.list_keyed(session, Recipient, limit=SHOWN, cursor=None)
    return render(
        "catalogues.html",
        viewer,
        purposes=purposes.items,
        recipients=recipients.items,
        controller=await controller_identity.shown(session),
    )
