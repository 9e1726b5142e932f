"""`consent-api export-openapi`: the OpenAPI document, to a file or stdout."""

import argparse
import sys
from pathlib import Path


def export_openapi(args: argparse.Namespace) -> None:
    """Write the document (`-`: to stdout); `main` sets up no log file for this command."""
    from app.main import create_app
    from app.openapi_export import render_openapi

    text = render_openapi(create_app())
    if args.output == "-":
        sys.stdout.write(text)
        return
    Path(args.output).write_text(text)
    print(f"Wrote {args.output}")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    export = sub.add_parser("export-openapi", help="write openapi/openapi.json")
    export.add_argument(
        "--output",
        default="openapi/openapi.json",
        help="file to write, `-` for stdout (default: %(default)s)",
    )
    export.set_defaults(func=export_openapi)
