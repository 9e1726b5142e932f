"""Every command, subcommand and option of `consent-api` explains itself in `--help`: the
test walks the whole argparse tree, so an option added without help fails here."""

import argparse
from collections.abc import Iterator

from app.cli import build_parser


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


def _undocumented(path: tuple[str, ...], parser: argparse.ArgumentParser) -> Iterator[str]:
    where = " ".join(("consent-api", *path))
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            # Each subcommand's one-liner in the parent's listing.
            listed = {a.dest for a in action._choices_actions if a.help}
            yield from (f"{where} {name}" for name in action.choices if name not in listed)
            continue
        if not action.help or action.help == argparse.SUPPRESS:
            yield f"{where} {'/'.join(action.option_strings) or action.dest}"


def test_every_option_of_every_command_has_help():
    missing = [m for path, p in _parsers(build_parser()) for m in _undocumented(path, p)]
    assert missing == [], "without help text:\n" + "\n".join(missing)


def test_the_walk_sees_every_command():
    seen = {" ".join(path) for path, _ in _parsers(build_parser())}
    assert {"sweep", "keys list", "sync mailchimp", "import subjects", "partitions detach"} <= seen


def test_help_of_every_command_prints(capsys):
    """`--help` of each (sub)command renders: a help string with a stray `%` would not."""
    for path, parser in _parsers(build_parser()):
        parser.format_help()
        assert parser.prog.endswith(" ".join(path))


def test_a_planted_option_without_help_is_found():
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers(dest="c")
    quiet = sub.add_parser("quiet")  # no help: not listed in the parent's --help
    quiet.add_argument("--flag")
    quiet.add_argument("thing")
    missing = [m for path, p in _parsers(parser) for m in _undocumented(path, p)]
    assert missing == ["consent-api quiet", "consent-api quiet --flag", "consent-api quiet thing"]


def test_each_sync_target_names_the_settings_it_reads():
    from app.core.config import Settings

    parsers = dict(_parsers(build_parser()))
    for target in ("mailchimp", "surveymonkey"):
        shown = parsers[("sync", target)].format_help()
        read = [f for f in Settings.model_fields if f.startswith((f"{target}_", "sync_"))]
        assert len(read) > 6
        missing = [f"CONSENT_{f.upper()}" for f in read if f"CONSENT_{f.upper()}" not in shown]
        assert missing == [], (target, missing)
    assert "CONSENT_MAILCHIMP" not in parsers[("sync", "surveymonkey")].format_help()
