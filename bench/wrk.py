"""Driving one case with wrk (C, two threads) and reading its report."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

# SUBJECT in the path or a body becomes a random seeded subject id, per request.
LUA = """
local ids = {%(ids)s}
local bodies = {%(bodies)s}
local path = %(path)s
local headers = %(headers)s
init = function(args)
  -- each wrk thread has its own Lua state: seed each differently
  math.randomseed(os.time() + tonumber(string.sub(tostring({}), 8), 16))
end
request = function()
  local id = ids[math.random(#ids)]
  local p = path:gsub("SUBJECT", id)
  local body = nil
  if #bodies > 0 then body = bodies[math.random(#bodies)]:gsub("SUBJECT", id) end
  return wrk.format(%(method)s, p, headers, body)
end
"""


@dataclass
class Case:
    name: str
    target: str  # "baseline" or "consent"
    method: str
    path: str
    bodies: list[str] = field(default_factory=list)
    versus: str | None = None  # the baseline case this one is compared with
    same_sql: str | None = None  # the baseline case running this one's own statement
    per_request: int = 1  # subject decisions per request (batches)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing the Debian package", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False)
        found = shutil.which("wrk")
        if found:
            return found
    sys.exit("bench: wrk is needed; install it with `sudo apt-get install -y wrk`")


def _to_ms(value: str) -> float:
    for suffix, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    raise ValueError(value)


def script(case: Case, ids: list[str], key: str) -> str:
    headers: dict[str, str] = {"Authorization": f"Bearer {key}"}
    if case.bodies:
        headers["Content-Type"] = "application/json"
    lua_headers = "{" + ",".join(f'["{k}"]={json.dumps(v)}' for k, v in headers.items()) + "}"
    text = LUA % {
        "ids": ",".join(json.dumps(i) for i in ids),
        "bodies": ",".join(json.dumps(b) for b in case.bodies),
        "path": json.dumps(case.path),
        "headers": lua_headers,
        "method": json.dumps(case.method),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(text)
    return f.name


def run(base: str, lua: str, seconds: float, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            lua,
            base,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [line.strip() for line in out.splitlines()]

    def pick(label: str) -> str:
        return next(line.split()[1] for line in lines if line.startswith(label))

    errors = 0
    for line in lines:
        if line.startswith("Non-2xx"):
            errors += int(line.split()[-1])
        if line.startswith("Socket errors:"):
            errors += sum(int(part.split()[-1]) for part in line.split(":", 1)[1].split(","))
    return {
        "rps": float(pick("Requests/sec")),
        "p50_ms": _to_ms(pick("50%")),
        "p99_ms": _to_ms(pick("99%")),
        "errors": errors,
    }
