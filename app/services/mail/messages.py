"""The messages the service sends: transactional (they answer the person's own request), so
no `List-Unsubscribe` headers; plain text with a simple HTML part, from the controller named
in the catalogue. The Message-ID names what the message is about (the pending consent or the
rights request), never the person."""

import html
import uuid
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from app.models.base import utcnow
from app.models.controller import ControllerPublic


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"


def _message(
    controller: ControllerPublic, to: str, ref: uuid.UUID, subject: str, lines: list[str], link: str
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = formataddr((controller.name, controller.email))
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = f"<{ref}@{_domain(controller.email)}>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    footer = [f"{controller.name}, {controller.address}", f"Questions: {controller.email}"]
    msg.set_content("\n\n".join([*lines, link, "If this was not you, ignore this e-mail:"
                                 " nothing happens unless you press the button.",
                                 "\n".join(footer)]) + "\n")  # fmt: skip
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    msg.add_alternative(
        '<!doctype html><html lang="en-GB"><head><meta charset="utf-8">'
        f"<title>{html.escape(subject)}</title></head><body>{paragraphs}"
        f'<p><a href="{html.escape(link)}">{html.escape(link)}</a></p>'
        "<p>If this was not you, ignore this e-mail: nothing happens unless you press the"
        f" button.</p><p>{'<br>'.join(html.escape(f) for f in footer)}</p></body></html>",
        subtype="html",
    )
    return msg


def double_opt_in(
    controller: ControllerPublic, to: str, ref: uuid.UUID, purpose: str, link: str, days: int
) -> EmailMessage:
    lines = [
        f"You (or someone using this address) asked {controller.name} for this: {purpose}.",
        f"Please confirm with the button on this page within {days} days:",
    ]
    return _message(controller, to, ref, f"Please confirm: {purpose}", lines, link)


def rights_request(
    controller: ControllerPublic, to: str, ref: uuid.UUID, request: str, link: str, days: int
) -> EmailMessage:
    lines = [
        f"A request was made to {controller.name} from your preference page: {request}.",
        f"Please confirm it is yours with the button on this page within {days} days:",
    ]
    return _message(controller, to, ref, "Please confirm your request", lines, link)
