"""The committed OpenAPI document's exact text (a test compares it with the app's)."""

import json

from fastapi import FastAPI


def render_openapi(app: FastAPI) -> str:
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
