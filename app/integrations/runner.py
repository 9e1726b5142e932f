"""What every sync worker shares: one transaction per step (the worker is its own commit
point, like a request), and its identity in decisions and audit entries."""

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_transaction(maker: Any, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
    """Run one service call in its own transaction and commit it."""
    async with maker() as session:
        result = await fn(session, *args, **kw)
        await session.commit()
        return result
