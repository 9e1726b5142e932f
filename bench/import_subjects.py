"""Bulk import rate: `python -m bench.import_subjects [--rows N] [--plain]`.

Writes N subjects (default 100,000; each with two lawful bases and two consent events
unless --plain) to an NDJSON file and runs `consent-api import subjects` on it, against
CONSENT_DATABASE_URL or a fresh embedded server in a temporary data directory. The command
prints the rate it measured (subjects per second). Also a way to seed the benchmark's data.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

NOTICE = "Tick to receive our white papers and blog by e-mail."
CATEGORIES = ("customer_contact", "prospect", "supplier_contact")


def row(i: int, plain: bool) -> dict[str, object]:
    out: dict[str, object] = {
        "email": f"bench-{i}-{uuid.uuid4().hex[:8]}@example.com",
        "name": f"Person {i}",
        "company": "Example Ltd",
        "category": CATEGORIES[i % len(CATEGORIES)],
        "source": "enquiry",
    }
    if plain:
        return out
    out["bases"] = [
        {"purpose": "day_to_day_communications", "basis": "legitimate_interests",
         "lia_ref": "LIA-1"},
        {"purpose": "email_campaigns", "basis": "consent"},
    ]  # fmt: skip
    out["consents"] = [
        {"purpose": "email_campaigns", "action": "given", "policy_version": "1",
         "notice_text": NOTICE, "occurred_at": "2026-01-05T10:00:00Z"},
        {"purpose": "content_subscriptions", "action": "withdrawn" if i % 3 else "given",
         "policy_version": "1", "notice_text": NOTICE, "occurred_at": "2026-01-06T10:00:00Z"},
    ]  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--plain", action="store_true", help="subjects only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "subjects.ndjson"
        with path.open("w") as f:
            for i in range(args.rows):
                f.write(json.dumps(row(i, args.plain)) + "\n")
        env = dict(os.environ)
        if not env.get("CONSENT_DATABASE_URL"):
            env["CONSENT_DATA_DIR"] = str(Path(tmp) / "data")
        cmd = [sys.executable, "-m", "app.cli", "import", "subjects", str(path)]
        subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, check=True)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        print(result.stdout.strip())
        if result.returncode:
            print(result.stderr[-2000:], file=sys.stderr)
            raise SystemExit(result.returncode)


if __name__ == "__main__":
    main()
