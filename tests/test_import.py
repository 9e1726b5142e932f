"""Bulk import (POST /v1/subjects/import and `consent-api import subjects`): validation with
the API's rules, the report, all-or-nothing batches, resuming, and the gate seeing imported
subjects exactly as it sees subjects created through the API."""

import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.core.config import Settings
from app.main import create_app
from app.services.imports import runner
from tests.conftest import new_subject

NOTICE = "Tick to receive our white papers and blog by e-mail."
NDJSON = {"Content-Type": "application/x-ndjson"}


def body(*rows: Any) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def full_row(**overrides: Any) -> dict[str, Any]:
    row = new_subject(
        bases=[
            {"purpose": "day_to_day_communications", "basis": "legitimate_interests",
             "lia_ref": "LIA-7"},
            {"purpose": "account_management", "basis": "contract", "contract_ref": "C-1",
             "contract_end": "2099-12-31"},
            {"purpose": "content_subscriptions", "basis": "consent"},
            {"purpose": "email_campaigns", "basis": "consent"},
        ],
        consents=[
            {"purpose": "content_subscriptions", "action": "given", "policy_version": "1",
             "notice_text": NOTICE, "occurred_at": "2026-01-05T10:00:00Z",
             "evidence": {"form_id": "crm-export", "page_url": "https://example.com/f"}},
            {"purpose": "email_campaigns", "action": "given", "policy_version": "1",
             "notice_text": NOTICE, "occurred_at": "2026-01-05T10:00:00Z"},
            {"purpose": "email_campaigns", "action": "withdrawn",
             "occurred_at": "2026-02-01T09:00:00Z"},
        ],
    )  # fmt: skip
    row.update(overrides)
    return row


@pytest.fixture
def small_batches(engine, conn, test_settings) -> httpx.AsyncClient:
    settings = Settings(**{**test_settings.model_dump(), "import_batch_size": 2})
    app = create_app(settings, engine=engine, session_bind=conn)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _decide(client, crm, sid, purpose):
    r = await client.post(
        "/v1/decisions", json={"subject_id": sid, "purpose": purpose}, headers=crm
    )
    assert r.status_code == 200, r.text
    d = r.json()
    return d["allowed"], d["basis"], d["reasons"]


async def _api_twin(client, crm, row: dict[str, Any]) -> str:
    """The same person, created through the single-write API."""
    fields = {k: v for k, v in row.items() if k not in ("bases", "consents")}
    fields["email"] = f"twin-{uuid.uuid4().hex[:8]}@example.com"
    r = await client.post("/v1/subjects", json=fields, headers=crm)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    for b in row["bases"]:
        purpose = b["purpose"]
        payload = {k: v for k, v in b.items() if k != "purpose"}
        r = await client.put(f"/v1/subjects/{sid}/bases/{purpose}", json=payload, headers=crm)
        assert r.status_code in (200, 201), r.text
    for c in row["consents"]:
        r = await client.post(
            "/v1/consent-events", json={**c, "subject_id": sid, "method": "import"}, headers=crm
        )
        assert r.status_code == 201, r.text
    return sid


async def test_imported_subjects_are_decided_exactly_like_api_created_ones(client, crm, db):
    row = full_row()
    r = await client.post("/v1/subjects/import", content=body(row), headers={**crm, **NDJSON})
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["imported"], report["bases"], report["consents"]) == (1, 4, 3)
    assert report["errors"] == [] and report["rejected_rows"] == 0
    found = await client.get("/v1/subjects", params={"email": row["email"]}, headers=crm)
    imported = found.json()["items"][0]
    assert imported["name"] == row["name"] and imported["status"] == "active"

    twin = await _api_twin(client, crm, row)
    purposes = [
        "day_to_day_communications", "account_management", "content_subscriptions",
        "email_campaigns", "business_development", "surveys", "contractual_communications",
    ]  # fmt: skip
    for purpose in purposes:
        assert await _decide(client, crm, imported["id"], purpose) == await _decide(
            client, crm, twin, purpose
        ), purpose
    assert (await _decide(client, crm, imported["id"], "content_subscriptions"))[0] is True
    assert (await _decide(client, crm, imported["id"], "email_campaigns"))[2] == [
        "consent_withdrawn"
    ]

    # The same rows the single writes leave: history, state, notices, change feed.
    sid = imported["id"]
    state = await client.get(f"/v1/subjects/{sid}/consents", headers=crm)
    twin_state = await client.get(f"/v1/subjects/{twin}/consents", headers=crm)
    strip = lambda items: [(i["purpose"], i["status"], i["occurred_at"]) for i in items]  # noqa: E731
    assert strip(state.json()["items"]) == strip(twin_state.json()["items"])
    history = (
        await db.execute(
            text("SELECT action, value FROM lawful_basis_history WHERE subject_id = :s"
                 " ORDER BY purpose"), {"s": sid},
        )
    ).all()  # fmt: skip
    twin_history = (
        await db.execute(
            text("SELECT action, value FROM lawful_basis_history WHERE subject_id = :s"
                 " ORDER BY purpose"), {"s": twin},
        )
    ).all()  # fmt: skip
    assert history == twin_history and len(history) == 4
    # In the order written (`id`): the sequencer later rewrites rows, which moves them in the heap.
    feed_sql = text(
        "SELECT kind, purpose, email_hash FROM changes WHERE subject_id = :s ORDER BY id"
    )
    feed = (await db.execute(feed_sql, {"s": sid})).all()
    twin_feed = (await db.execute(feed_sql, {"s": twin})).all()
    # The same entries the single writes append (sync needs each): creation, bases, events.
    assert sorted((k, p or "") for k, p, _ in feed) == sorted((k, p or "") for k, p, _ in twin_feed)
    assert [(k, p) for k, p, _ in feed if k.startswith("consent.")] == [
        ("consent.given", "content_subscriptions"),
        ("consent.given", "email_campaigns"),
        ("consent.withdrawn", "email_campaigns"),
    ]
    assert ("subject.created", None) in [(k, p) for k, p, _ in feed]
    assert all(h is not None for *_, h in feed)
    events = (
        await db.execute(
            text("SELECT method, form_id, notice_sha256 FROM consent_events WHERE subject_id = :s"
                 " ORDER BY occurred_at, purpose"), {"s": sid},
        )
    ).all()  # fmt: skip
    assert events[0].method == "import" and events[0].form_id == "crm-export"
    batch_audit = (
        await db.execute(
            text("SELECT digest FROM audit_entries WHERE action = 'subject.import'"
                 " AND digest->>'input_sha256' = :h"), {"h": report["sha256"]},
        )
    ).scalars().all()  # fmt: skip
    assert batch_audit == [
        {"input_sha256": report["sha256"], "batch": 0, "subjects": 1, "bases": 4,
         "consent_bases": 0, "consents": 3, "lines": [1, 1]}
    ]  # fmt: skip


async def test_refused_rows_are_reported_by_line_and_field_without_their_values(
    small_batches, crm, db
):
    taken = new_subject()
    secret_name = f"Zebedee-{uuid.uuid4().hex[:6]}"
    rows = [
        full_row(),  # line 1  } batch 0: both valid -> committed
        full_row(),  # line 2  }
        new_subject(email="not-an-email", name=secret_name),  # line 3 } batch 1: refused
        full_row(),  # line 4 (valid, held back with line 3)     }
        new_subject(category="martians", source="telepathy"),  # 5 } batch 2: refused
        b'{"email": broken',  # 6                                  }
        new_subject(bases=[{"purpose": "content_subscriptions", "basis": "legitimate_interests",
                           "lia_ref": "LIA-1"}],
                    consents=[{"purpose": "surveys", "action": "given"}]),  # 7 } batch 3
        new_subject(unknown_field=secret_name, **{"x y": 1}),  # 8                }
        taken,  # 9: e-mail of a live subject } batch 4
        new_subject(email=taken["email"].upper()),  # 10: repeats line 9 (normalised) }
    ]  # fmt: skip
    async with small_batches as c:
        r = await c.post("/v1/subjects", json=taken, headers=crm)
        assert r.status_code == 201
        r = await c.post("/v1/subjects/import", content=body(*rows), headers={**crm, **NDJSON})
    assert r.status_code == 200, r.text
    assert secret_name not in r.text and "not-an-email" not in r.text
    report = r.json()
    got = {(e["line"], e["field"]) for e in report["errors"]}
    assert got == {
        (3, "email"),
        (5, "category"), (5, "source"),
        (6, None),
        (7, "bases.0.basis"), (7, "consents.0"),
        (8, "unknown_field"), (8, "?"),
        (10, "email"),
    }, report["errors"]  # fmt: skip
    assert all(e["why"] for e in report["errors"])
    # Placed as a request body's JSON fault is (app.core.errors.not_json_detail).
    assert [e["why"] for e in report["errors"] if e["line"] == 6] == [
        "not valid JSON at line 6, column 11"
    ]
    assert (report["rows"], report["imported"], report["batches_committed"]) == (10, 2, 1)
    assert (report["batches_rejected"], report["rejected_rows"], report["held_back"]) == (4, 6, 2)
    # All or nothing: the valid row 4 of a refused batch is not stored; rows 1-2 are.
    for line, stored in ((1, True), (2, True), (4, False)):
        n = (
            await db.execute(
                text("SELECT count(*) FROM subjects WHERE email = :e"),
                {"e": rows[line - 1]["email"]},
            )
        ).scalar_one()
        assert n == (1 if stored else 0), line


async def test_a_live_email_in_the_database_refuses_only_its_own_row(small_batches, crm, db):
    """An e-mail a live subject has refuses its row, reported by line; the rest of the
    batch goes in (it used to take its whole batch down with it), and the subject that
    holds the e-mail is left exactly as it was."""
    taken = new_subject(name="Kept Name")
    other = full_row()
    async with small_batches as c:
        await c.post("/v1/subjects", json=taken, headers=crm)
        r = await c.post(
            "/v1/subjects/import",
            content=body(other, dict(taken, name="Imported Name")),
            headers={**crm, **NDJSON},
        )
    report = r.json()
    assert report["errors"] == [
        {"line": 2, "field": "email", "why": "a live subject already has this e-mail"}
    ]
    assert (report["imported"], report["rejected_rows"], report["held_back"]) == (1, 1, 0)
    assert (report["batches_committed"], report["batches_rejected"]) == (1, 0)
    assert (report["updated"], report["skipped"], report["existing"]) == (0, 0, [])
    stored = (
        await db.execute(
            text("SELECT email, name FROM subjects WHERE email IN (:a, :b) ORDER BY email"),
            {"a": other["email"], "b": taken["email"]},
        )
    ).all()
    assert sorted(tuple(r) for r in stored) == sorted(
        [(other["email"], other["name"]), (taken["email"], "Kept Name")]
    )


async def test_sending_the_same_input_again_resumes_and_a_corrected_input_finishes(
    small_batches, crm, db
):
    rows = [full_row() for _ in range(5)]
    bad = dict(rows[2], email="broken")
    first = body(rows[0], rows[1], bad, rows[3], rows[4])
    async with small_batches as c:
        r1 = (await c.post("/v1/subjects/import", content=first, headers={**crm, **NDJSON})).json()
        r2 = (await c.post("/v1/subjects/import", content=first, headers={**crm, **NDJSON})).json()
        fixed = body(*rows)
        r3 = (await c.post("/v1/subjects/import", content=fixed, headers={**crm, **NDJSON})).json()
    assert (r1["imported"], r1["batches_committed"], r1["batches_rejected"]) == (3, 2, 1)
    assert (r2["imported"], r2["batches_skipped"], r2["already_imported"]) == (0, 2, 3)
    assert r2["rejected_rows"] == 1  # the refused batch is tried again, and refused again
    assert (r3["imported"], r3["batches_skipped"], r3["errors"]) == (2, 2, [])
    emails = [r["email"] for r in rows]
    n = (
        await db.execute(text("SELECT count(*) FROM subjects WHERE email = ANY(:e)"), {"e": emails})
    ).scalar_one()
    assert n == 5
    batches = (
        await db.execute(
            text("SELECT count(*) FROM import_batches WHERE input_sha256 IN (:a, :b)"),
            {"a": r1["sha256"], "b": r3["sha256"]},
        )
    ).scalar_one()
    assert batches == 3


async def test_endpoint_limits_media_type_size_and_role(engine, conn, test_settings, make_key):
    crm = await make_key("crm")
    website = await make_key("website")
    settings = Settings(**{**test_settings.model_dump(), "import_max_bytes": 2000})
    app = create_app(settings, engine=engine, session_bind=conn)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        one = body(new_subject())
        r = await c.post("/v1/subjects/import", content=one, headers=crm)
        assert r.status_code == 415
        assert r.headers["content-type"].startswith("application/problem+json")
        big = body(*[new_subject() for _ in range(20)])
        assert len(big) > 2000
        r = await c.post("/v1/subjects/import", content=big, headers={**crm, **NDJSON})
        assert r.status_code == 413
        r = await c.post("/v1/subjects/import", content=one, headers={**website, **NDJSON})
        assert r.status_code == 403
        r = await c.post("/v1/subjects/import", content=one, headers={**crm, **NDJSON})
        assert r.status_code == 200 and r.json()["imported"] == 1
        # The ordinary limit still holds everywhere else.
        assert settings.max_body_bytes > 2000


async def test_a_batch_without_consents_still_feeds_sync(client, crm, db):
    """Sync learns of every imported subject and basis, whether or not its batch carries
    consents (the feed used to be written only with consent events)."""
    plain = new_subject()
    with_bases = new_subject(bases=[{"purpose": "email_campaigns", "basis": "consent"}])
    r = await client.post(
        "/v1/subjects/import", content=body(plain, with_bases), headers={**crm, **NDJSON}
    )
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == 2
    feed = (
        await db.execute(
            text(
                "SELECT s.email, c.kind, c.purpose, c.email_hash = s.email_hash FROM changes c"
                " JOIN subjects s ON s.id = c.subject_id WHERE s.email IN (:a, :b)"
                " ORDER BY c.id"
            ),
            {"a": plain["email"], "b": with_bases["email"]},
        )
    ).all()
    assert [tuple(r) for r in feed] == [
        (plain["email"], "subject.created", None, True),
        (with_bases["email"], "subject.created", None, True),
        (with_bases["email"], "basis.set", "email_campaigns", True),
    ]


async def test_a_bulk_import_ends_by_refreshing_the_planner_statistics(
    client, crm, db, monkeypatch
):
    """An import of ANALYZE_FROM_SUBJECTS subjects or more ends with an ANALYZE of the tables
    it wrote, so that the gate's plans are made for the tables as they now are (until
    autovacuum's next round they were made for the tables before the load)."""
    monkeypatch.setattr(runner, "ANALYZE_FROM_SUBJECTS", 3)
    r = await client.post(
        "/v1/subjects/import",
        content=body(*(full_row() for _ in range(3))),
        headers={**crm, **NDJSON},
    )
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == 3
    for table in ("subjects", "lawful_bases", "consent_state"):
        estimated, counted = (
            await db.execute(
                text(
                    f"SELECT c.reltuples, (SELECT count(*) FROM {table}) FROM pg_class c"
                    f" WHERE c.oid = '{table}'::regclass"
                )
            )
        ).one()
        assert estimated == counted, table  # ANALYZE counted the rows this import stored
