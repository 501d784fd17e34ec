"""The size of the Lua state the library runs in: ``python -m bench.lua_heap``.

Starts its own ``redis-server`` (never 6379), loads beside the library a one-line Function
that reads the state's ``collectgarbage("count")`` (the Functions state is shared by every
library on a server), and prints the largest reading, in KB, while it runs:

1. each of ``bench.server_cost``'s cases (put, get, merges, a lock pair) ``--calls`` times;
2. ``--merges`` one-member merges into one object of 500 members of 1,000 characters
   (~500 KB), with a trace of six readings spread over them.

The state is read after every call (between calls: not inside one).

The library sets the state's collector step multiplier to 25 on its first call
(``lua/_lib.lua``, ``adopt_runtime``); ``--stepmul N`` sets another after it (200 is Lua's
default: the state as it was before stop 33), to compare. Memory Redis keeps outside
``maxmemory``; ``INFO memory`` shows it as ``used_memory_vm_functions``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

PROBE = """#!lua name=smbench_heap
redis.register_function('smbench_heap', function(keys, args)
  if args[1] then collectgarbage('setstepmul', tonumber(args[1])) end
  return math.floor(collectgarbage('count'))
end)"""
CASES = ("put", "get", "merge_deep(32)", "merge_text(32)", "merge_nested(32)", "lock")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=4000, help="calls of each case")
    p.add_argument("--merges", type=int, default=1500, help="merges into the 500 KB object")
    p.add_argument("--stepmul", type=int, default=None, help="set after the library's first")
    a = p.parse_args(argv)

    from bench.server_cost import cases
    from swarm_memory import SwarmMemory
    from tests.servers import RedisServer

    server = RedisServer()
    server.start()
    try:
        raw = server.client()
        fns = cases(server.port)  # (the library has run: the state has its multiplier)
        raw.function_load(PROBE, replace=True)

        def kb(*args: Any) -> int:
            return int(raw.fcall("smbench_heap", 0, *args))

        if a.stepmul is not None:
            kb(str(a.stepmul))
        print(f"stepmul {a.stepmul if a.stepmul is not None else 'as the library sets it'}")
        for name in CASES:
            most = 0
            for _ in range(a.calls):
                fns[name]()
                most = max(most, kb())
            print(f"{name:18} largest {most} KB ({a.calls} calls)", flush=True)

        mem = SwarmMemory.from_url(server.url, agent="bench")
        mem.create_namespace("heap", strategy="merge", exist_ok=True)
        ns = mem.namespace("heap")
        ns.put("doc", {f"k{i}": "x" * 1000 for i in range(500)})
        most, trace, every = 0, [], max(1, a.merges // 6)
        for i in range(a.merges):
            ns.put("doc", {f"k{i % 500}": "y" * (1000 + i % 7)})
            now = kb()
            most = max(most, now)
            if i % every == 0:
                trace.append(now)
        print(f"{'merge 500 KB':18} largest {most} KB ({a.merges} merges); trace {trace}")
        mem.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
