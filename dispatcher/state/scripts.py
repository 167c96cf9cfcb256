"""The Lua scripts behind the job store's atomic transitions, loaded from `dispatcher/state/lua/`.

Each script is a `.lua` file whose opening comment says what it takes and
returns (KEYS, ARGV, Returns) and, on its last line, which shared pieces it
uses (`-- Uses: ended, buckets.`): the pieces (`ended.lua`, `buckets.lua`,
`activity.lua`, `stream_prelude.lua`, `deployment_model.lua`) are put before
it, in that order, and `bounds` is the latency histogram's bucket bounds as a
Lua table, `BOUNDS_MS`. Opening comments are left out of what Redis gets.

Each script receives every key it touches through KEYS (never builds one), so
`dispatcher.state.keys` stays the one place that knows key names. A job hash holds, among
others, `status` and `attempt` (the number of the message allowed to run).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from dispatcher.state.stats import BUCKET_BOUNDS_MS

__all__ = [
    "ACQUIRE",
    "ADJUST",
    "APPEND",
    "BATCH_ADD",
    "BATCH_CANCEL",
    "BLOCK",
    "CLAIM",
    "FINISH",
    "RELEASE",
    "REQUEUE",
    "RESCHEDULE",
    "TRIP",
    "lua_script",
]

USES = "-- Uses: "


def _bounds() -> str:
    """The histogram's bucket upper bounds as a Lua table (the last is math.huge)."""
    parts = ["math.huge" if b == float("inf") else repr(float(b)) for b in BUCKET_BOUNDS_MS]
    return "local BOUNDS_MS = {" + ", ".join(parts) + "}\n"


@cache
def _read(name: str) -> tuple[tuple[str, ...], str]:
    """The pieces `name.lua` uses, and its code without its opening comment."""
    text = files("dispatcher.state").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    opening = 0
    while opening < len(lines) and lines[opening].startswith("--"):
        opening += 1
    uses = tuple(
        piece.strip(" .\n")
        for line in lines[:opening]
        if line.startswith(USES)
        for piece in line[len(USES) :].split(",")
    )
    return uses, "".join(lines[opening:])


@cache
def lua_script(name: str) -> str:
    """The whole text of script `name` (`dispatcher/state/lua/<name>.lua`) as Redis runs it."""
    uses, code = _read(name)
    pieces = [_bounds() if piece == "bounds" else _read(piece)[1] for piece in uses]
    return "".join([*pieces, code])


ACQUIRE = lua_script("acquire")
ADJUST = lua_script("adjust")
APPEND = lua_script("append")
BATCH_ADD = lua_script("batch_add")
BATCH_CANCEL = lua_script("batch_cancel")
BLOCK = lua_script("block")
CLAIM = lua_script("claim")
FINISH = lua_script("finish")
RELEASE = lua_script("release")
REQUEUE = lua_script("requeue")
RESCHEDULE = lua_script("reschedule")
TRIP = lua_script("trip")
