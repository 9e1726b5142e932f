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
