"""Guard rails for sync: the worker reaches the database only through services (which never
commit), and hands nothing out except through the gate."""

import re
from pathlib import Path

from app.cli import build_parser
from app.integrations.progress import Progress
from tests.test_architecture import ROOT, python_files

APP = Path(__file__).resolve().parents[1] / "app"


def test_the_integrations_are_inside_the_guard():
    # tests/test_architecture.py walks all of app/ (integrations and services/sync included)
    # for direct subject reads and commits in services; make sure it really sees them.
    scanned = {p.relative_to(ROOT).as_posix() for p in python_files(ROOT)}
    assert {"app/integrations/worker.py", "app/services/sync/state.py"} <= scanned


def test_the_worker_reads_subjects_only_through_the_gate():
    """Every subject row the integrations get comes from `audiences` (the gate's predicate)
    or `decisions`; the services of the sync folder never select a subject's fields."""
    source = "\n".join(p.read_text() for p in (APP / "integrations").rglob("*.py"))
    assert "audiences.chunk" in source and "audiences.gate_subjects" in source
    sync_services = "\n".join(p.read_text() for p in (APP / "services" / "sync").rglob("*.py"))
    fields = re.compile(r"\b(s\.(email|name|company)|SELECT (email|name|company))\b")
    assert fields.findall(sync_services) == []


def test_the_sync_command_line():
    args = build_parser().parse_args(["sync", "mailchimp", "--once", "--audience", "surveys"])
    assert (args.target, args.once, args.audience) == ("mailchimp", True, "surveys")
    args = build_parser().parse_args(["sync", "surveymonkey"])
    assert (args.target, args.once, args.audience) == ("surveymonkey", False, None)


def test_progress_is_a_bar_on_a_terminal_and_log_lines_otherwise(caplog):
    bar = Progress(interactive=True)
    bar.start("first sync")
    bar.advance(500)
    bar.finish(pushed=500)
    assert bar.count == 500
    plain = Progress(interactive=False)
    with caplog.at_level("INFO", logger="consent_api.sync"):
        plain.start("first sync")
        plain.advance(10)
        plain.finish()
    assert [r.getMessage() for r in caplog.records][-3:] == [
        "first sync: started",
        "first sync: progress",
        "first sync: finished",
    ]


def test_missing_settings_stop_the_command_in_one_line_before_anything_starts(monkeypatch, capsys):
    import pytest

    from app.cli import main
    from app.core.config import get_settings

    for key in list(__import__("os").environ):
        if key.startswith("CONSENT_"):
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    try:
        for target, needed in (
            ("mailchimp", "CONSENT_MAILCHIMP_API_KEY"),
            ("surveymonkey", "CONSENT_SURVEYMONKEY_ACCESS_TOKEN"),
        ):
            with pytest.raises(SystemExit) as exit_:
                main(["sync", target, "--once"])
            assert needed in str(exit_.value) and "\n" not in str(exit_.value)
        monkeypatch.setenv("CONSENT_MAILCHIMP_API_KEY", "keywithoutdatacentre")
        monkeypatch.setenv("CONSENT_MAILCHIMP_LIST_ID", "l1")
        get_settings.cache_clear()
        with pytest.raises(SystemExit, match="ending in -<dc>"):
            main(["sync", "mailchimp"])
    finally:
        get_settings.cache_clear()
    assert capsys.readouterr().out == ""
