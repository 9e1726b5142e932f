"""Every route of an app, with included routers expanded, on any supported FastAPI: newer
releases list an included router as one entry of `app.routes`."""

from typing import Any


def all_routes(app: Any) -> list[Any]:
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before lazy router inclusion: app.routes is already flat
        return list(app.routes)
    return list(iter_route_contexts(app.routes))
