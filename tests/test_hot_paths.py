"""The hot-path plumbing (app.core.driver): the documents it writes are the models' own,
writes are durable in autocommit mode, transactions undo together, the pool is opened in
full, and an Idempotency-Key still replays."""

import uuid

import pytest
from sqlalchemy import text

from app.core.driver import Database, Row, prepare
from app.models.decision import BatchDecisionPublic, DecisionPublic
from app.models.subject import SubjectPublic
from tests.conftest import new_subject
from tests.live_service import raw_connection


def test_prepare_numbers_names_once_and_leaves_casts_alone():
    p = prepare("SELECT CAST(:a AS uuid), :b, :a, x::text, '12:30' FROM t WHERE y = :b", b="text")
    assert (
        p.sql == "SELECT CAST($1 AS uuid), $2::text, $1, x::text, '12:30' FROM t WHERE y = $2::text"
    )
    assert p.args({"a": 1, "b": 2}) == [1, 2]


async def _subject(client, crm, **overrides):
    r = await client.post("/v1/subjects", json=new_subject(**overrides), headers=crm)
    assert r.status_code == 201, r.text
    return r.json()


async def test_decision_document_is_the_models_and_is_stored_and_audited(client, crm, db):
    s = await _subject(client, crm)
    r = await client.post(
        "/v1/decisions", json={"subject_id": s["id"], "purpose": "email_campaigns"}, headers=crm
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert DecisionPublic.model_validate(doc).model_dump(mode="json") == doc
    assert list(doc) == list(DecisionPublic.model_fields)
    assert doc["decided_at"].endswith("Z") and doc["reasons"] == ["no_lawful_basis"]
    stored = (
        await db.execute(
            text("SELECT allowed, reasons FROM decisions WHERE id = :i"), {"i": doc["id"]}
        )
    ).one()
    assert stored.allowed is False and stored.reasons == ["no_lawful_basis"]
    audited = (
        await db.execute(
            text(
                "SELECT count(*) FROM audit_entries WHERE entity_id = :i AND action = 'decision.create'"
            ),
            {"i": doc["id"]},
        )
    ).scalar()
    assert audited == 1


async def test_batch_document_is_the_models(client, crm):
    s = await _subject(client, crm)
    body = {"subjects": [s["id"], "nobody@example.com"], "purpose": "surveys"}
    doc = (await client.post("/v1/decisions/batch", json=body, headers=crm)).json()
    assert BatchDecisionPublic.model_validate(doc).model_dump(mode="json") == doc
    assert [i["subject"] for i in doc["items"]] == body["subjects"]
    assert doc["items"][1]["reasons"] == ["subject_unknown"]


async def test_get_subject_document_is_the_models(client, crm, db):
    from app.models.subject import to_public
    from app.services.subjects.records import get_subject

    s = await _subject(client, crm, phone="+44 1234 567890")
    doc = (await client.get(f"/v1/subjects/{s['id']}", headers=crm)).json()
    orm = await get_subject(db, uuid.UUID(s["id"]))
    assert doc == to_public(orm).model_dump(mode="json") == s
    assert list(doc) == list(SubjectPublic.model_fields)
    missing = await client.get(f"/v1/subjects/{uuid.uuid4()}", headers=crm)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_decision_idempotency_key_replays(client, crm):
    s = await _subject(client, crm)
    headers = {**crm, "Idempotency-Key": f"k-{uuid.uuid4()}"}
    body = {"subject_id": s["id"], "purpose": "surveys"}
    first = await client.post("/v1/decisions", json=body, headers=headers)
    again = await client.post("/v1/decisions", json=body, headers=headers)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    other = await client.post(
        "/v1/decisions", json={**body, "purpose": "email_campaigns"}, headers=headers
    )
    assert other.status_code == 422


async def test_the_pool_opens_in_full_and_autocommit_writes_are_durable(
    database_url, test_settings
):
    db = await Database.open(database_url, test_settings)
    marker = f"hot-{uuid.uuid4().hex[:8]}"
    try:
        assert db.pool is not None and db.pool.get_size() == test_settings.db_pool_size
        insert = prepare(
            "INSERT INTO audit_entries (actor_name, actor_role, action, entity, digest)"
            " VALUES (:name, 'system', 'test.hot', 'test', '{}') RETURNING id"
        )
        async with db.autocommit() as con:
            assert con.is_in_transaction() is False  # no BEGIN around a single statement
            row = await insert.fetchrow(con, name=marker)
            assert isinstance(row, Row) and row.id == row["id"]
        with pytest.raises(RuntimeError):
            async with db.transaction() as con:
                assert con.is_in_transaction()
                await insert.fetchrow(con, name=marker)
                raise RuntimeError("undo")
        # A separate connection sees the autocommitted row and not the undone one.
        other = await raw_connection(database_url)
        try:
            n = await other.fetchval(
                "SELECT count(*) FROM audit_entries WHERE actor_name = $1", marker
            )
        finally:
            await other.close()
        assert n == 1
    finally:
        await db.close()
