"""What the pages say, over HTTP: plain labels instead of codes (the code kept on a smaller
second line for auditors), UK dates on the UK clock instead of ISO timestamps, readable
month names on the overview, and a deadline on the person's page only for a request that
is still open."""

import html
import re
from datetime import UTC, date, datetime, timedelta
from typing import get_args

from app.models.catalogue import LAWFUL_BASES, RetentionRule
from app.models.decision import Reason
from app.models.rights import RightStatus, RightType
from app.web.dates import month_label, uk_date
from app.web.labels import LABELS
from tests.conftest import new_subject

ISO_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
ISO_DATE = re.compile(r"(?<![\w-])\d{4}-\d{2}-\d{2}(?![\w-])")
UK_INSTANT = re.compile(r"\b\d{1,2} [A-Z][a-z]+ \d{4}, \d{2}:\d{2}\b")
# API.md's reason codes, the model's included: every one has words of its own.
API_REASONS = {"subject_merged", "consent_expired", *get_args(Reason)}


def _code(code: str) -> str:
    return f'<small class="code">{code}</small>'


def _visible(page: str) -> str:
    """The page's text without its attributes (ids and data-* keep codes on purpose)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_uk_dates_on_the_uk_clock():
    assert (
        uk_date(datetime(2026, 12, 4, 18, 29, 59, 123456, tzinfo=UTC)) == "4 December 2026, 18:29"
    )
    # Summer: British Summer Time, an hour ahead of UTC (and the next day near midnight).
    assert uk_date(datetime(2026, 7, 1, 23, 30, tzinfo=UTC)) == "2 July 2026, 00:30"
    assert uk_date(datetime(2026, 7, 1, 23, 30, tzinfo=UTC), time=False) == "2 July 2026"
    assert uk_date(date(2026, 12, 4)) == "4 December 2026"
    assert uk_date("2026-12-04") == "4 December 2026"
    assert uk_date("2026-12-04T18:29:00.654321+00:00") == "4 December 2026, 18:29"
    assert uk_date(datetime(2026, 1, 5, 9, 0)) == "5 January 2026, 09:00"  # naive: UTC
    assert uk_date(None) == ""
    assert month_label("2026-01") == "Jan 2026"
    assert month_label("2026-01", short=False) == "January 2026"


def test_every_known_code_has_a_label():
    """A code the service can produce never reaches a page as the fallback's guess."""
    expected = {
        "basis": set(LAWFUL_BASES),
        "request_type": set(get_args(RightType)),
        "request_status": set(get_args(RightStatus)),
        "request_status_for_person": set(get_args(RightStatus)),
        "reason": API_REASONS,
        "retention_rule": set(get_args(RetentionRule)),
        "retention_anchor": set(get_args(RetentionRule)),
        "recipient_role": {"partner", "processor"},
        "api_role": {"crm", "website", "sync", "auditor", "admin"},
    }
    for kind, codes in expected.items():
        assert codes <= set(LABELS[kind]), (kind, codes - set(LABELS[kind]))
    assert "explicit_consent" in LABELS["safeguard"]


async def test_ropa_page_shows_labels_with_their_codes(client, auditor):
    r = await client.get(
        "/v1/reports/processing-activities", headers={**auditor, "Accept": "text/html"}
    )
    page = html.unescape(r.text)
    shown = _visible(r.text)
    assert "A set period after the last contract ends" + _code("contract_end_plus") in page
    assert "The person's explicit consent (Art 49(1)(a))" + _code("explicit_consent") in page
    assert "Legitimate interests (Art 6(1)(f))" + _code("legitimate_interests") in page
    assert "Contact at an existing customer" + _code("customer_contact") in page
    assert "Partner (a controller of its own)" + _code("partner") in page
    assert "White papers, blogs and specific enquiries" + _code("content_subscriptions") in page
    assert "§" not in page  # the policy's clause numbers mean nothing to a reader
    # The generated time, in UK words; no ISO timestamp anywhere on the page.
    assert UK_INSTANT.search(shown) and not ISO_INSTANT.search(shown)


async def _subject(client, crm) -> str:
    r = await client.post("/v1/subjects", json=new_subject(), headers=crm)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _request(client, crm, sid: str, type_: str, received: str | None = None) -> dict:
    body = {"type": type_, "subject_id": sid}
    if received:
        body["received_at"] = received
    r = await client.post("/v1/rights-requests", json=body, headers=crm)
    assert r.status_code == 201, r.text
    return r.json()


async def test_overview_shows_labels_uk_dates_and_month_names(client, crm, auditor):
    sid = await _subject(client, crm)
    req = await _request(client, crm, sid, "erasure", "2026-01-31T10:00:00Z")
    body = {
        "subject_id": sid,
        "purpose": "content_subscriptions",
        "action": "given",
        "method": "web_form",
        "policy_version": "1",
        "notice_text": "Tick to receive white papers.",
    }
    assert (await client.post("/v1/consent-events", json=body, headers=crm)).status_code == 201
    denied = await client.post(
        "/v1/decisions", json={"subject_id": sid, "purpose": "surveys"}, headers=crm
    )
    reasons = denied.json()["reasons"]
    assert reasons
    r = await client.get("/v1/reports/overview", headers={**auditor, "Accept": "text/html"})
    page, shown = html.unescape(r.text), _visible(r.text)
    row = page.split(f'data-request-id="{req["id"]}"')[1].split("</tr>")[0]
    assert "Erasure (Art 17)" + _code("erasure") in row
    assert "Received" + _code("received") in row
    assert "31 January 2026" in row and uk_date(req["due_at"]) in row
    # Received late on a summer evening in UTC: already the next day in the UK.
    late = await _request(client, crm, sid, "access", "2026-07-01T23:30:00Z")
    r = await client.get("/v1/reports/overview", headers={**auditor, "Accept": "text/html"})
    page, shown = html.unescape(r.text), _visible(r.text)
    row = page.split(f'data-request-id="{late["id"]}"')[1].split("</tr>")[0]
    assert "2 July 2026" in row and "1 July 2026" not in row
    for reason in reasons:
        assert LABELS["reason"][reason] + _code(reason) in page
    assert "White papers, blogs and specific enquiries" + _code("content_subscriptions") in page
    month = datetime.now(UTC).strftime("%Y-%m")
    assert f">{month_label(month)}</text>" in page  # the chart's axis: "Jan 2026"
    assert f"<td>{month_label(month, short=False)}</td>" in page  # the table: "January 2026"
    assert not re.search(r">\d{2}-\d{2}<", page)  # no more "26-01"
    assert not ISO_INSTANT.search(shown) and not ISO_DATE.search(shown)


async def _closed(client, crm, req: dict, action: str) -> None:
    await client.post(
        f"/v1/rights-requests/{req['id']}/verify-identity", json={"method": "email"}, headers=crm
    )
    body = {} if action == "complete" else {"code": "manifestly_unfounded", "reason": "again"}
    r = await client.post(f"/v1/rights-requests/{req['id']}/{action}", json=body, headers=crm)
    assert r.status_code == 200, r.text


async def _preference_page(client, crm, sid: str) -> str:
    links = await client.post(f"/v1/subjects/{sid}/links", json={}, headers=crm)
    assert links.status_code == 200, links.text
    r = await client.get("/" + links.json()["preference_url"].split("/", 3)[3])
    assert r.status_code == 200
    return html.unescape(r.text)


async def test_a_closed_request_shows_no_deadline(client, crm):
    sid = await _subject(client, crm)
    done = await _request(client, crm, sid, "access", "2026-01-31T10:00:00Z")
    refused = await _request(client, crm, sid, "portability", "2026-02-02T10:00:00Z")
    await _closed(client, crm, done, "complete")
    await _closed(client, crm, refused, "reject")
    page = await _preference_page(client, crm, sid)
    assert "Done" in page and "Refused" in page and "31 January 2026" in page
    assert "We answer by" not in page
    for closed in (done, refused):
        assert uk_date(closed["due_at"]) not in page
    # An open request beside them: its deadline, and only its own.
    open_ = await _request(client, crm, sid, "erasure")
    page = await _preference_page(client, crm, sid)
    assert "We answer by" in page and uk_date(open_["due_at"]) in page
    for closed in (done, refused):
        assert uk_date(closed["due_at"]) not in page
    assert "identity_verified" not in _visible(page) and not ISO_DATE.search(_visible(page))


async def test_preference_page_dates_are_uk_dates(client, crm):
    sid = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{sid}/bases/content_subscriptions", json={"basis": "consent"}, headers=crm
    )
    when = datetime.now(UTC) - timedelta(days=3)
    body = {
        "subject_id": sid,
        "purpose": "content_subscriptions",
        "action": "given",
        "method": "web_form",
        "policy_version": "1",
        "notice_text": "Tick to receive white papers.",
        "occurred_at": when.isoformat(),
    }
    assert (await client.post("/v1/consent-events", json=body, headers=crm)).status_code == 201
    page = await _preference_page(client, crm, sid)
    assert f"You agreed on {uk_date(when, time=False)}." in page
    assert UK_INSTANT.search(page)  # the link's expiry, with its time
    assert not ISO_INSTANT.search(_visible(page))
