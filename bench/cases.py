"""What `python -m bench` and `python -m bench.growth` drive, what they compare it with, the
targets they check, and the table they print."""

import json
import random
from typing import Any

from bench.wrk import Case

PURPOSES = ("email_campaigns", "content_subscriptions")
SELECT = "baseline SELECT by key"
INSERT = "baseline INSERT"
SAME_DECISION = "baseline same-SQL decision"
SAME_EVENT = "baseline same-SQL consent event"
DECISIONS = "POST /v1/decisions"
EVENTS = "POST /v1/consent-events"
SUBJECT = "GET /v1/subjects/{id}"
BATCH = "POST /v1/decisions/batch x1000"


def _bodies(ids: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(decision, consent event, batch) request bodies; SUBJECT becomes a subject id."""
    decision = [json.dumps({"subject_id": "SUBJECT", "purpose": p}) for p in PURPOSES]
    event = [
        json.dumps(
            {
                "subject_id": "SUBJECT",
                "purpose": "content_subscriptions",
                "action": action,
                "method": "web_form",
                "policy_version": "1",
                "notice_text": "Send me white papers.",
                "evidence": {"form_id": "bench", "page_url": "https://example.com/papers"},
            }
        )
        for action in ("given", "withdrawn")
    ]
    batches = [
        json.dumps({"subjects": random.sample(ids, 1000), "purpose": "email_campaigns"})
        for _ in range(8)
    ]
    return decision, event, batches


def cases(ids: list[str]) -> list[Case]:
    decision, event, batches = _bodies(ids)
    return [
        Case("baseline GET constant", "baseline", "GET", "/const"),
        Case(SELECT, "baseline", "GET", "/items/SUBJECT"),
        Case(INSERT, "baseline", "POST", "/items", event),
        # The service's own statements with nothing in front: compared with the bare SELECT
        # and INSERT, so that a slowed baseline run shows.
        Case(SAME_DECISION, "baseline", "POST", "/same-sql/decisions", decision, SELECT),
        Case(SAME_EVENT, "baseline", "POST", "/same-sql/consent-events", event, INSERT),
        Case("GET /healthz", "consent", "GET", "/healthz", versus="baseline GET constant"),
        Case(DECISIONS, "consent", "POST", "/v1/decisions", decision, SELECT, SAME_DECISION),
        Case(SUBJECT, "consent", "GET", "/v1/subjects/SUBJECT", versus=SELECT),
        Case(EVENTS, "consent", "POST", "/v1/consent-events", event, INSERT, SAME_EVENT),
        Case(BATCH, "consent", "POST", "/v1/decisions/batch", batches, per_request=1000),
    ]


def _ratio(results: dict[str, dict[str, Any]], name: str, against: str, key: str) -> float:
    other = results[name][against]
    return float(results[name][key] / results[other][key])


def targets(results: dict[str, dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """(target, met, what was measured) for every target a run of the cases can check."""

    def ratio(name: str, key: str = "rps", against: str = "versus") -> float:
        return _ratio(results, name, against, key)

    per_s = results[BATCH]["rps"] * 1000
    rss = max(r["peak_rss_mb"] for r in results.values() if r["target"] == "consent")
    checks = [
        ("decisions >= 0.85x same-SQL req/s", ratio(DECISIONS, against="same_sql"), 0.85),
        ("decisions >= 0.6x SELECT req/s", ratio(DECISIONS), 0.6),
        ("consent-events >= 0.85x same-SQL req/s", ratio(EVENTS, against="same_sql"), 0.85),
        ("consent-events >= 0.6x INSERT req/s", ratio(EVENTS), 0.6),
        ("GET subject >= 0.7x SELECT req/s", ratio(SUBJECT), 0.7),
    ]
    out = [(name, value >= floor, f"{value:.2f}x") for name, value, floor in checks]
    p99 = ratio(DECISIONS, "p99_ms")
    out.insert(2, ("decisions p99 <= 2x SELECT p99", p99 <= 2, f"{p99:.2f}x"))
    out.append(("batch >= 60,000 decisions/s", per_s >= 60_000, f"{per_s:,.0f}/s"))
    out.append(("peak RSS of a serving worker <= 150 MB", rss <= 150, f"{rss:.0f} MB"))
    return out


def _cells(results: dict[str, dict[str, Any]], r: dict[str, Any]) -> tuple[str, str, str]:
    """(x base, p99 x, x same): req/s and p99 against `versus`, req/s against same-SQL."""
    base = results.get(r["versus"] or "")
    same = results.get(r.get("same_sql") or "")
    ratio = f"{r['rps'] / base['rps']:.2f}" if base else "-"
    p99 = f"{r['p99_ms'] / base['p99_ms']:.2f}" if base else "-"
    return ratio, p99, f"{r['rps'] / same['rps']:.2f}" if same else "-"


def print_table(results: dict[str, dict[str, Any]]) -> None:
    head = (
        f"{'case':<32}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'RSS MB':>8}"
        f"{'CPU ms':>8}{'PG ms':>7}{'x base':>8}{'p99 x':>7}{'x same':>8}  vs"
    )
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        ratio, p99, same = _cells(results, r)
        extra = r["versus"] or ""
        if r["per_request"] > 1:
            extra = f"{r['rps'] * r['per_request']:,.0f} decisions/s"
        print(
            f"{name:<32}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{int(r['errors']):>8}{r['peak_rss_mb']:>8.0f}{r['cpu_ms_per_request']:>8.3f}"
            f"{r['pg_cpu_ms_per_request']:>7.3f}{ratio:>8}{p99:>7}{same:>8}  {extra}"
        )


def print_baseline(results: dict[str, dict[str, Any]]) -> None:
    """The baseline's absolute rates side by side: a slowed baseline run shows here before
    it flatters the ratios."""
    rate = {name: results[name]["rps"] for name in (SELECT, INSERT, SAME_DECISION, SAME_EVENT)}
    print(
        f"baseline this run: SELECT {rate[SELECT]:,.0f} req/s, INSERT {rate[INSERT]:,.0f}"
        f" req/s; same-SQL decision {rate[SAME_DECISION]:,.0f} req/s"
        f" ({rate[SAME_DECISION] / rate[SELECT]:.2f}x SELECT), same-SQL consent event"
        f" {rate[SAME_EVENT]:,.0f} req/s ({rate[SAME_EVENT] / rate[INSERT]:.2f}x INSERT)"
    )
