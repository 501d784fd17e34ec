"""Markdown table of the goals from saved runs: ``python -m bench.table a.json b.json``.

Prints one column per run (its pinning mode), so the README's table is generated from
the JSON of real runs, never typed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def cell(g: dict[str, Any]) -> str:
    if "measured" not in g:
        return "not measured"
    m = g["measured"]
    if g.get("unit") == "us":
        text = f"{m / 1000:.2f} ms" if m >= 1000 else f"{m:.0f} µs"
    elif isinstance(m, int):
        text = str(m)
    else:
        text = f"{m:.2f}x"
        if "min" in g:
            text += f" ({g['min']:.2f}\u2013{g['max']:.2f})"  # en dash
    mark = "✓" if g["status"].startswith("met") else "✗"
    return f"{text} {mark}"


def mode(doc: dict[str, Any]) -> str:
    spec = doc["params"].get("taskset")
    return f"pinned {spec}" if spec else "unpinned"


def main(argv: list[str]) -> int:
    docs = [json.loads(Path(p).read_text()) for p in argv]
    if not docs:
        print("usage: python -m bench.table RUN.json [RUN.json ...]", file=sys.stderr)
        return 2
    print("| goal | " + " | ".join(mode(d) for d in docs) + " |")
    print("|---|" + "---|" * len(docs))
    # Rows by goal text (runs of other options or commits have other goal lists), in the
    # order they first appear; a goal a run did not have is "—".
    by_run = [{g["goal"]: g for g in d["goals"]} for d in docs]
    order = list(dict.fromkeys(g["goal"] for d in docs for g in d["goals"]))
    for goal in order:
        cells = [cell(run[goal]) if goal in run else "—" for run in by_run]
        print(f"| {goal} | " + " | ".join(cells) + " |")
    env = docs[0]["env"]
    print(
        f"\n{env['cpu_model']}, {env['cpus_online']} vCPUs; Python {env['python']}, "
        f"redis-py {env['redis_py']} + hiredis {env['hiredis']}, {env['redis_server']}; "
        f"git {env['git_commit']}"
        + (" + uncommitted core changes" if env.get("git_dirty_core") else "")
        + "; load average (1 min) before/after: "
        + ", ".join(f"{d['env']['loadavg_before'][0]}/{d['env']['loadavg_after'][0]}" for d in docs)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
