"""`consent-api keys rotate-email-hash`: every address still known re-hashed under the
newest e-mail hash key, in batches with a progress bar; resumable (run it again)."""

import argparse
import asyncio
import uuid

from app.cli.common import CliError, cli_principal, database_url, migrate
from app.core.config import Settings, current_settings


async def _rotate(url: str, settings: Settings, batch: int) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from app.core.db import create_engine, create_sessionmaker
    from app.services.access import email_hash_rotation as rotation

    engine = create_engine(url, settings)
    maker = create_sessionmaker(engine)
    console = Console(stderr=True)
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    done, after = 0, uuid.UUID(int=0)
    try:
        async with maker() as session:
            total = await rotation.remaining(session)
        with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
            task = bar.add_task("Re-hashing addresses", total=total)
            while True:
                async with maker() as session:
                    step = await rotation.rehash_batch(session, after=after, size=batch)
                    await session.commit()
                if step.last_id is None:
                    break
                done, after = done + step.rehashed, step.last_id
                bar.advance(task, step.rehashed)
        async with maker() as session:
            await rotation.record_run(session, cli_principal(), rehashed=done)
            await session.commit()
    finally:
        await engine.dispose()
    return done


def rotate_email_hash(args: argparse.Namespace) -> None:
    from app.services.access.email_hash_rotation import RotationError, newest

    settings = current_settings()
    try:
        key = newest()
    except RotationError as exc:
        raise CliError(str(exc)) from exc
    url = database_url(settings)
    migrate(url)
    done = asyncio.run(_rotate(url, settings, args.batch))
    print(
        f"Re-hashed {done} addresses under e-mail hash key {key.id}. Keep the older keys"
        " configured after it: erased people's opt-outs are hashes only and still use them."
    )


def add_parser(keys_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rotate = keys_sub.add_parser(
        "rotate-email-hash",
        help="re-hash every known address under the newest CONSENT_EMAIL_HASH_KEYS key",
        description="Re-hash every live subject's address (and the opt-outs and rights"
        " requests stored under its old hash) under the first key of"
        " CONSENT_EMAIL_HASH_KEYS. Resumable: run it again after a stop.",
    )
    rotate.add_argument(
        "--batch", type=int, default=1000, help="addresses per transaction (default 1000)"
    )
    rotate.set_defaults(func=rotate_email_hash)
