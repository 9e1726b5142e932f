"""`consent-api import subjects FILE` on a CSV: the report on the terminal, refused rows by
line and field (never their values), a non-zero exit, and a rerun that resumes."""

import json
import uuid

from sqlalchemy import text

from tests.test_cli import cli_env, run_cli  # noqa: F401 - fixture

BASES = json.dumps([{"purpose": "day_to_day_communications", "basis": "legitimate_interests",
                     "lia_ref": "LIA-9"}])  # fmt: skip


def _csv(emails: list[str]) -> str:
    header = "email,name,category,source,bases\n"
    rows = [
        f'{emails[0]},Ann Example,customer_contact,enquiry,"{BASES.replace(chr(34), chr(34) * 2)}"',
        f"{emails[1]},Bob Example,prospect,event,",
        "secret-not-an-email,Carol Hidden,prospect,event,",
    ]
    return header + "\n".join(rows) + "\n"


async def test_csv_import_reports_refused_rows_and_resumes(cli_env, tmp_path, db):
    tag = uuid.uuid4().hex[:8]
    emails = [f"ann-{tag}@example.com", f"bob-{tag}@example.com"]
    path = tmp_path / "crm.csv"
    path.write_text(_csv(emails))
    report = tmp_path / "report.json"
    first = run_cli("import", "subjects", str(path), "--batch-size", "1", "--report",
                    str(report), env=cli_env)  # fmt: skip
    assert first.returncode != 0
    assert "line 4: email:" in first.stderr  # header is line 1
    assert "secret-not-an-email" not in first.stderr + first.stdout
    assert "Carol" not in first.stderr + first.stdout
    assert "2 subjects imported" in first.stdout and "subjects/s" in first.stdout
    saved = json.loads(report.read_text())
    assert saved["errors"] == [{"line": 4, "field": "email", "why": saved["errors"][0]["why"]}]
    stored = (
        await db.execute(
            text("SELECT s.email, count(b.purpose) FROM subjects s LEFT JOIN lawful_bases b"
                 " ON b.subject_id = s.id WHERE s.email = ANY(:e) GROUP BY s.email"
                 " ORDER BY s.email"), {"e": emails},
        )
    ).all()  # fmt: skip
    assert [tuple(r) for r in stored] == [(emails[0], 1), (emails[1], 0)]

    again = run_cli("import", "subjects", str(path), "--batch-size", "1", env=cli_env)
    assert "0 subjects imported" in again.stdout and "2 already imported" in again.stdout

    bad = tmp_path / "bad.csv"
    bad.write_text("email,shoe_size\nx@example.com,44\n")
    refused = run_cli("import", "subjects", str(bad), env=cli_env)
    assert refused.returncode != 0 and "unknown CSV column(s): shoe_size" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def _people_csv(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["email,name,company,job_title,category,source"]
    lines += [f"{e},{n},{c},{j},customer_contact,enquiry" for e, n, c, j in rows]
    return "\n".join(lines) + "\n"


async def _stored(db, emails):
    rows = await db.execute(
        text("SELECT email, name, company, job_title FROM subjects WHERE email = ANY(:e)"
             " AND erased_at IS NULL ORDER BY email"), {"e": emails},
    )  # fmt: skip
    return {r.email: (r.name, r.company, r.job_title) for r in rows}


async def test_on_existing_refuse_skip_and_update(cli_env, tmp_path, db):
    tag = uuid.uuid4().hex[:8]
    ann, bob, cat = (f"{who}-{tag}@example.com" for who in ("ann", "bob", "cat"))
    first = tmp_path / "first.csv"
    first.write_text(_people_csv([(ann, "Ann First", "Old Co", "Engineer")]))
    assert run_cli("import", "subjects", str(first), env=cli_env).returncode == 0
    second = tmp_path / "second.csv"
    # Ann again (line 3) with a new name and company and no job title (an empty cell).
    second.write_text(
        _people_csv([(bob, "Bob", "B Ltd", ""), (ann, "Ann Second", "New Co", ""),
                     (cat, "Cat", "C Ltd", "")])
    )  # fmt: skip

    # The default refuses line 3 alone, by line and reason; lines 2 and 4 go in.
    refused = run_cli("import", "subjects", str(second), env=cli_env)
    assert refused.returncode == 1
    assert "line 3: email: a live subject already has this e-mail" in refused.stderr
    assert ann not in refused.stdout + refused.stderr
    assert "--on-existing skip" in refused.stderr.strip().splitlines()[-1]
    assert "2 inserted, 0 updated, 0 skipped, 1 refused" in refused.stdout
    assert await _stored(db, [ann, bob, cat]) == {
        ann: ("Ann First", "Old Co", "Engineer"), bob: ("Bob", "B Ltd", None),
        cat: ("Cat", "C Ltd", None),
    }  # fmt: skip

    # skip: the same file again redoes the batch; every e-mail exists now, none changes.
    skipped = run_cli("import", "subjects", str(second), "--on-existing", "skip", env=cli_env)
    assert skipped.returncode == 0, skipped.stderr
    assert "0 inserted, 0 updated, 3 skipped, 0 refused" in skipped.stdout
    assert "line 3: skipped: a live subject already has this e-mail" in skipped.stdout
    assert (await _stored(db, [ann]))[ann] == ("Ann First", "Old Co", "Engineer")

    # update: Ann's named fields change through the subjects' write path; the empty job
    # title cell leaves hers; Bob and Cat, identical, are left alone (nothing written).
    updated = run_cli("import", "subjects", str(second), "--on-existing", "update", env=cli_env)
    assert updated.returncode == 0, updated.stderr
    assert "0 inserted, 1 updated, 2 skipped, 0 refused" in updated.stdout
    assert "line 3: updated (company, name)" in updated.stdout
    assert (await _stored(db, [ann]))[ann] == ("Ann Second", "New Co", "Engineer")
    ann_id = (
        await db.execute(text("SELECT id FROM subjects WHERE email = :e"), {"e": ann})
    ).scalar_one()
    audit = (
        await db.execute(
            text("SELECT digest FROM audit_entries WHERE action = 'subject.update'"
                 " AND entity_id = :i"), {"i": str(ann_id)},
        )
    ).scalars().all()  # fmt: skip
    assert audit == [{"fields": ["company", "name"]}]
    feed = (
        await db.execute(
            text("SELECT s.email, c.kind FROM changes c JOIN subjects s ON s.id = c.subject_id"
                 " WHERE s.email = ANY(:e) AND c.kind = 'subject.updated'"),
            {"e": [ann, bob, cat]},
        )
    ).all()  # fmt: skip
    assert [tuple(r) for r in feed] == [(ann, "subject.updated")]

    again = run_cli("import", "subjects", str(second), "--on-existing", "update", env=cli_env)
    assert again.returncode == 0 and "3 already imported" in again.stdout


def test_the_progress_bar_counts_rows_not_bytes(tmp_path):
    import io

    from rich.console import Console
    from rich.text import Text

    from app.cli.imports import RowProgress, _sha256_and_lines
    from app.models.imports import ImportReport

    path = tmp_path / "rows.csv"
    path.write_bytes(b"email\na@example.com\n\nb@example.com\nc@example.com")  # no last \n
    assert _sha256_and_lines(path)[1] == 5
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    progress = RowProgress(5 - 1, console)  # less the header
    counts = {"sha256": "x", "batch_size": 2, "batches_rejected": 0}
    with progress.bar:
        progress.on_batch(ImportReport(rows=2, imported=1, skipped=1, rejected_rows=0,
                                       batches_committed=1, **counts))  # fmt: skip
        task = progress.bar.tasks[0]
        assert (task.completed, task.total) == (2, 4)
        progress.finish(ImportReport(rows=3, imported=1, skipped=1, rejected_rows=1,
                                     batches_committed=2, **counts))  # fmt: skip
    assert task.completed == task.total == 3  # the blank line was no row
    shown = Text.from_ansi(console.file.getvalue()).plain
    assert "3/3 rows" in shown and "1 inserted, 0 updated, 1 skipped, 1 refused" in shown
    assert "kB" not in shown and "bytes" not in shown
