"""One fact, one write path: a static check of every place under app/ that writes the tables
holding the service's facts.

A writer is found in four forms: SQL text (`INSERT INTO t`, `UPDATE t`, `DELETE FROM t`,
`COPY t`, in any string, f-string part or constant), SQLAlchemy Core (`insert(Model)`,
`update(Model)`, `delete(Model)`, PostgreSQL's `insert(Model)`), the ORM (`session.add(...)`
of a table model, directly or through a variable assigned one in the same function) and
asyncpg's COPY (`copy_records_to_table("t", ...)`, `copy_to_table`). Each (table, verb) has
the modules allowed to write it, each with its reason; a second writer anywhere else fails
the test. Set-based writers compose the home module's fragment (`INSERT_SUBJECT`,
`INSERT_CONSENT_EVENT`, ...) rather than spelling the statement again, so their own text
never names the table.
"""

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import SQLModel

import app.models  # noqa: F401 - registers every table model

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"

SUBJECTS = "app/services/subjects/records.py"
CONSENT_SQL = "app/services/consent/statements.py"
BASES = "app/services/bases/records.py"
OPTOUTS = "app/services/optouts/records.py"
OBJECTIONS = "app/services/optouts/objections.py"
AUDIT = "app/services/audit/entries.py"
FEED = "app/services/changes/feed.py"
CLOCK = "app/services/changes/clock.py"
IDEMPOTENCY = "app/core/idempotency.py"
ERASURE = "app/services/rights/erasure.py"
OUTBOX = "app/services/sync/outbox.py"
CONTROLLER = "app/services/catalogue/controller.py"
DOUBLE_OPT_IN = "app/services/consent/double_opt_in.py"
MAIL_OUTBOX = "app/services/mail/outbox.py"
WEBHOOK_ENDPOINTS = "app/services/webhooks/endpoints.py"
WEBHOOK_DELIVERIES = "app/services/webhooks/deliveries.py"

# (table, verb) -> {module: why}. Creating and appending have one home each; changing and
# removing are listed writer by writer, each for a fact of its own (erasure, sealing...).
ALLOWED: dict[tuple[str, str], dict[str, str]] = {
    ("subjects", "INSERT"): {SUBJECTS: "create a subject (API, web prospect, import)"},
    ("subjects", "UPDATE"): {
        SUBJECTS: "update a subject (PATCH, rectification, restriction)",
        ERASURE: "erase a subject's personal fields (Art 17), leaving a tombstone",
        "app/services/rights/requests.py": "lift a restriction (Art 18(3)), its own action",
    },
    ("consent_events", "INSERT"): {CONSENT_SQL: "record a consent event"},
    ("consent_events", "UPDATE"): {ERASURE: "erase an event's free-text evidence"},
    ("consent_state", "INSERT"): {CONSENT_SQL: "the current state, newest occurred_at wins"},
    ("consent_notices", "INSERT"): {CONSENT_SQL: "the notice a consent was given on"},
    ("lawful_bases", "INSERT"): {BASES: "set a basis"},
    ("lawful_bases", "DELETE"): {BASES: "end a basis"},
    ("lawful_bases", "UPDATE"): {ERASURE: "erase a basis' free-text note"},
    ("lawful_basis_history", "INSERT"): {BASES: "a basis' history"},
    ("lawful_basis_history", "UPDATE"): {ERASURE: "erase the notes in a basis' history"},
    ("marketing_optouts", "INSERT"): {OPTOUTS: "record an opt-out (and carry it to a new address)"},
    ("marketing_optouts", "UPDATE"): {
        ERASURE: "erase an opt-out's free-text reason",
        OPTOUTS: "move an opt-out to the newest e-mail hash key",
    },
    ("marketing_optouts", "DELETE"): {OPTOUTS: "a duplicate left by a move to the newest key"},
    ("objections", "INSERT"): {OBJECTIONS: "record an objection (Art 21)"},
    ("audit_entries", "INSERT"): {AUDIT: "append an audit entry"},
    ("audit_entries", "UPDATE"): {"app/services/audit/chain.py": "the sealer chains entries"},
    ("changes", "INSERT"): {FEED: "append a change-feed entry"},
    ("changes", "UPDATE"): {FEED: "the sequencer numbers entries"},
    ("gate_moments", "INSERT"): {CLOCK: "a moment at which time alone changes the gate"},
    ("gate_moments", "UPDATE"): {CLOCK: "the clock marks a moment fed"},
    ("gate_moments", "DELETE"): {CLOCK: "a moment withdrawn (or its subject erased)"},
    ("sync_outbox", "INSERT"): {OUTBOX: "a sync call's intent, before the call"},
    ("sync_outbox", "UPDATE"): {OUTBOX: "a sync call's outcome"},
    ("sync_outbox", "DELETE"): {OUTBOX: "a waiting addition replaced by the gate's new answer"},
    ("double_opt_ins", "INSERT"): {DOUBLE_OPT_IN: "a consent pending its e-mail confirmation"},
    ("double_opt_ins", "UPDATE"): {
        DOUBLE_OPT_IN: "expire: keep only the hashed record of the attempt",
        "app/services/person/confirmations.py": "the confirmation's time and evidence",
    },
    ("email_outbox", "INSERT"): {MAIL_OUTBOX: "queue an e-mail (the double opt-in composes it)"},
    ("email_outbox", "UPDATE"): {MAIL_OUTBOX: "an e-mail sent, failed (retried) or cancelled"},
    ("webhook_endpoints", "INSERT"): {WEBHOOK_ENDPOINTS: "register or change an endpoint"},
    ("webhook_endpoints", "UPDATE"): {WEBHOOK_ENDPOINTS: "rotate its secret, disable on 410"},
    ("webhook_endpoints", "DELETE"): {WEBHOOK_ENDPOINTS: "remove an endpoint"},
    ("webhook_deliveries", "INSERT"): {
        WEBHOOK_DELIVERIES: "a delivery per feed entry (composed by the sequencer)"
    },
    ("webhook_deliveries", "UPDATE"): {WEBHOOK_DELIVERIES: "a delivery's outcome, or a retry"},
    ("controller", "INSERT"): {CONTROLLER: "replace the controller's identity (upsert)"},
    ("idempotency_keys", "INSERT"): {IDEMPOTENCY: "claim an Idempotency-Key"},
    ("idempotency_keys", "UPDATE"): {IDEMPOTENCY: "store the first answer"},
    ("idempotency_keys", "DELETE"): {
        IDEMPOTENCY: "forget keys past 24 hours",
        ERASURE: "forget stored answers that echo an erased subject",
    },
}
WATCHED = {table for table, _ in ALLOWED}
SQL_WRITE = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM|COPY)\s+([a-z_]+)\b")
CORE_VERBS = {"insert": "INSERT", "pg_insert": "INSERT", "update": "UPDATE", "delete": "DELETE"}
COPY_CALLS = {"copy_records_to_table": "INSERT", "copy_to_table": "INSERT"}


def _model_tables() -> dict[str, str]:
    return {
        m.class_.__name__: m.class_.__tablename__
        for m in SQLModel._sa_registry.mappers  # type: ignore[attr-defined]
        if hasattr(m.class_, "__tablename__")
    }


MODELS = _model_tables()


@dataclass(frozen=True)
class Write:
    path: str
    line: int
    table: str
    verb: str
    form: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.verb} {self.table} ({self.form})"


def _strings(node: ast.AST) -> Iterator[ast.Constant]:
    for child in ast.walk(node):
        if isinstance(child, ast.Constant) and isinstance(child.value, str):
            yield child


def _plain_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _sql_writes(tree: ast.AST, path: str) -> Iterator[Write]:
    for const in _strings(tree):
        for verb, table in SQL_WRITE.findall(const.value):
            verb = "DELETE" if verb.startswith("DELETE") else verb.split()[0]
            if verb == "COPY":
                verb = "INSERT"
            yield Write(path, const.lineno, table, verb, "SQL text")


def _aliases(tree: ast.AST) -> dict[str, str]:
    """`from x import insert as i` -> {"i": "insert"}: a renamed import is still seen."""
    return {
        alias.asname: alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname
    }


def _call_writes(tree: ast.AST, path: str) -> Iterator[Write]:
    aliases = _aliases(tree)

    def _name(node: ast.AST) -> str | None:
        name = _plain_name(node)
        return aliases.get(name, name) if name else None

    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
            continue
        made: dict[str, str] = {}  # variable -> table, for `x = Model(...)` then `add(x)`
        for node in ast.walk(func):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                model = _name(node.value.func)
                for target in node.targets:
                    if isinstance(target, ast.Name) and model in MODELS:
                        made[target.id] = MODELS[model]
            if not isinstance(node, ast.Call):
                continue
            called = _name(node.func)
            first = node.args[0] if node.args else None
            if called in CORE_VERBS and first is not None and _name(first) in MODELS:
                table = MODELS[_name(first)]  # type: ignore[index]
                yield Write(path, node.lineno, table, CORE_VERBS[called], "Core")
            elif called in ("add", "add_all") and first is not None:
                inner = first.func if isinstance(first, ast.Call) else first
                table = MODELS.get(_name(inner) or "") or made.get(_name(first) or "")
                if table:
                    yield Write(path, node.lineno, table, "INSERT", "ORM add()")
            elif called in COPY_CALLS and isinstance(first, ast.Constant):
                yield Write(path, node.lineno, str(first.value), COPY_CALLS[called], "COPY")


def writes_in(source: str, path: str) -> list[Write]:
    tree = ast.parse(source)
    found = {*_sql_writes(tree, path), *_call_writes(tree, path)}  # nested scopes: once each
    return sorted((w for w in found if w.table in WATCHED), key=str)


def all_writes() -> list[Write]:
    found = []
    for file in sorted(APP.rglob("*.py")):
        found += writes_in(file.read_text(), file.relative_to(ROOT).as_posix())
    return found


def second_writers(writes: list[Write]) -> list[Write]:
    return [w for w in writes if w.path not in ALLOWED.get((w.table, w.verb), {})]


def test_every_fact_has_one_write_path():
    writes = all_writes()
    assert not second_writers(writes), "\n".join(map(str, second_writers(writes)))
    # Every creating home is really found (the scanner sees what it must see).
    for (table, verb), homes in ALLOWED.items():
        if verb == "INSERT":
            seen = {w.path for w in writes if (w.table, w.verb) == (table, verb)}
            assert seen == set(homes), (table, verb, seen)


PLANTED = {
    "SQL text": 'X = text("INSERT INTO subjects (id) VALUES (:id)")\n',
    "SQL f-string": 'X = f"UPDATE changes SET seq = {s}"\n',
    "Core insert": "async def f(s):\n    await s.execute(insert(AuditEntry).values(action='x'))\n",
    "Core pg insert": "async def f(s):\n    await s.execute(pg_insert(Objection).values())\n",
    "Core, renamed": "from sqlalchemy import update as u\nfrom m import Subject as S\nX = u(S)\n",
    "ORM add": "async def f(s):\n    s.add(MarketingOptOut(email_hash='h'))\n",
    "ORM add of a variable": "async def f(s):\n    row = Subject(email='a')\n    s.add(row)\n",
    "COPY": "async def f(c):\n    await c.copy_records_to_table('changes', records=[])\n",
    "COPY text": 'X = "COPY consent_events FROM STDIN"\n',
}


def test_a_planted_second_writer_of_each_kind_is_found():
    for form, source in PLANTED.items():
        planted = writes_in(source, "app/web/planted.py")
        assert planted, form
        assert second_writers(planted) == planted, form
        # The same text in its home module is no second writer.
        table, verb = planted[0].table, planted[0].verb
        home = next(iter(ALLOWED[(table, verb)]))
        assert not second_writers(writes_in(source, home)), form
