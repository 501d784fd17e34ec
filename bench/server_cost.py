"""What one call costs the server: ``python -m bench.server_cost [--callgrind] [-n 2000]``.

Starts its own redis-server on a free loopback port (under ``valgrind --tool=callgrind``
with ``--callgrind``), runs each case ``n`` times, and prints per call:

- ``usec``: ``INFO commandstats`` usec_per_call of the command that ran the case (the
  script's EVALSHA / FCALL, or the bare command) — moves with whatever else the machine
  is doing;
- ``Ir``: with ``--callgrind``, the instructions the server executed inside that command
  (``call()``'s inclusive cost, so socket reads and the event loop are left out), which
  repeats to within a fraction of a percent whatever the machine is doing.

Cases: ``base.cas_xadd`` (a bare Lua CAS + HSET + XADD), ``base.hgetall`` (an entry-shaped
hash), ``put`` / ``get`` (one entry, through the library), ``lock`` (acquire + release,
per pair), ``base.lock`` (SET NX PX + a Lua compare-and-delete, per pair),
``put_many(100)`` vs ``base.cas_xadd.x100`` (100 bare CAS calls in one pipeline): per
round, so divide by 100 for an item; ``get_many(100)`` (100 small entries, one call) per
round too.

And the floor under any script-based read (a Redis Function, FCALL_RO, loaded once):
``floor.fcall_ro`` runs an empty function with the 18 key names and 4 arguments a ``get``
of one entry passes; ``floor.fcall_ro.hgetall`` a function that only returns HGETALL of
the entry-shaped hash (the cost of moving its 18 reply elements into Lua and back out);
``floor.fcall_ro.packed`` / ``floor.fcall_ro.get`` one that returns the two stored fields
of a packed entry, called with the key names and arguments of read.lua's get (9 names,
4 arguments) / of get.lua (7 names, 3 arguments).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.baselines import CAS_XADD, RELEASE
from bench.harness import VALUE, encode

NS = "bench-cost"
FLOOR_LIBRARY = """#!lua name=smfloor
redis.register_function{function_name='smfloor_empty', flags={'no-writes'},
  callback=function(keys, args) return 1 end}
redis.register_function{function_name='smfloor_hgetall', flags={'no-writes'},
  callback=function(keys, args) return redis.call('HGETALL', keys[1]) end}
redis.register_function{function_name='smfloor_packed', flags={'no-writes'},
  callback=function(keys, args) return redis.call('HMGET', keys[8], 'm', 'v') end}
redis.register_function{function_name='smfloor_get', flags={'no-writes'},
  callback=function(keys, args) return redis.call('HMGET', keys[#keys], 'm', 'v') end}
"""
# Commands a client sends (the others ran inside a script: their time is in the script's).
TOP_LEVEL = frozenset({"evalsha", "evalsha_ro", "eval", "fcall", "fcall_ro", "hgetall", "set"})


def _free_port() -> int:
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != 6379:
            return port


def _start(callgrind: bool, tmp: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    cmd = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        tmp,
    ]
    if callgrind:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={tmp}/cg.out",
            *cmd,
        ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port)
    deadline = time.monotonic() + 60
    while True:
        try:
            r.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return proc, port


def _collect(pid: int, on: bool) -> None:
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(pid)],
        check=True,
        capture_output=True,
    )


def _dump_call_ir(pid: int, tmp: str) -> int:
    """Inclusive instructions of ``call()`` (command execution) since the last zero."""
    for f in Path(tmp).glob("cg.out*"):
        f.unlink()
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    outs = sorted(Path(tmp).glob("cg.out*"))
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", str(outs[-1])],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) .*\s(\S*:)?call\s*\[", line)
        if m:
            return int(m.group(1).replace(",", ""))
    return 0


def commandstats(r: redis.Redis) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for name, row in r.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = (int(row["calls"]), int(row["usec"]))
    return out


def cases(port: int) -> dict[str, Callable[[], Any]]:
    from swarm_memory import SwarmMemory
    from swarm_memory.keys import NamespaceKeys

    r = redis.Redis(port=port)
    mem = SwarmMemory.from_url(f"redis://127.0.0.1:{port}/0", agent="bench")
    mem.create_namespace(NS, exist_ok=True)
    ns = mem.namespace(NS)
    ns.put("g", VALUE)
    sha = r.script_load(CAS_XADD)
    release = r.script_load(RELEASE)
    body = encode(VALUE)
    r.hset(
        "bare:h",
        mapping={
            "v": body,
            "f": "json",
            "ver": 1,
            "cr": 1,
            "mr": 1,
            "ct": 1,
            "mt": 1,
            "by": "bench",
            "x": 0,
        },
    )
    ver = [0]

    def cas() -> None:
        ver[0] = r.evalsha(sha, 2, "bare:cas", "bare:stream", ver[0], body)[1]

    def base_lock() -> None:
        r.set("bare:lock", "tok", nx=True, px=30000)
        r.evalsha(release, 1, "bare:lock", "tok")

    def lock() -> None:
        lk = ns.lock("L", ttl=30)
        lk.acquire()
        lk.release()

    many = {f"m{i}": VALUE for i in range(100)}
    pipe_keys = [f"bare:m{i}" for i in range(100)]

    def cas_x100() -> None:
        pipe = r.pipeline(transaction=False)
        for k in pipe_keys:
            pipe.evalsha(sha, 2, k, "bare:stream", ver_of.get(k, 0), body)
        for k, reply in zip(pipe_keys, pipe.execute(), strict=True):
            ver_of[k] = reply[1]

    ver_of: dict[str, int] = {}
    r.function_load(FLOOR_LIBRARY, replace=True)
    floor_keys = [f"sm:{{{NS}}}:k{i}" for i in range(18)]
    floor_args = ["bench", "10000", "get", "sm:id:bench"]
    nk = NamespaceKeys.of(mem.settings.key_prefix, NS)
    get_keys = [*nk.read_fixed(), nk.entry("g"), nk.history("g")]
    get_only_keys = [*nk.get_fixed(), nk.entry("g")]
    ns.put_many({f"gm{i}": VALUE for i in range(100)})
    gm_keys = [f"gm{i}" for i in range(100)]
    return {
        "floor.fcall_ro": lambda: r.execute_command(
            "FCALL_RO", "smfloor_empty", 18, *floor_keys, *floor_args
        ),
        "floor.fcall_ro.hgetall": lambda: r.execute_command(
            "FCALL_RO", "smfloor_hgetall", 1, "bare:h"
        ),
        # A get's shape since stop 20: its 9 key names and 4 arguments, returning the
        # stored entry's two fields (the packed layout) and nothing else.
        "floor.fcall_ro.packed": lambda: r.execute_command(
            "FCALL_RO", "smfloor_packed", 9, *get_keys, *floor_args
        ),
        # The get script's shape since stop 22 (lua/get.lua): its 7 key names and 3
        # arguments, returning the stored entry's two fields and nothing else.
        "floor.fcall_ro.get": lambda: r.execute_command(
            "FCALL_RO", "smfloor_get", 7, *get_only_keys, *floor_args[:2], floor_args[3]
        ),
        "base.cas_xadd": cas,
        "base.cas_xadd.x100": cas_x100,
        "put_many(100)": lambda: ns.put_many(many),
        "base.hgetall": lambda: r.hgetall("bare:h"),
        "put": lambda: ns.put("p", VALUE),
        "get": lambda: ns.get("g"),
        "get_many(100)": lambda: ns.get_many(gm_keys),
        "base.lock": base_lock,
        "lock": lock,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--callgrind", action="store_true")
    p.add_argument("--only", default="")
    a = p.parse_args(argv)
    if a.callgrind and not shutil.which("valgrind"):
        print("valgrind not found", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="sm-cost-")
    proc, port = _start(a.callgrind, tmp)
    try:
        r = redis.Redis(port=port)
        fns = cases(port)
        only = [c for c in a.only.split(",") if c]
        print(f"{'case':24} {'usec/call':>10} {'Ir/call':>12}  commands")
        for name, fn in fns.items():
            if only and name not in only:
                continue
            for _ in range(20):
                fn()  # warm up (script loads, first writes)
            r.config_resetstat()
            if a.callgrind:
                _dump_call_ir(proc.pid, tmp)
                _collect(proc.pid, True)
            for _ in range(a.n):
                fn()
            ir = 0
            if a.callgrind:
                _collect(proc.pid, False)
                ir = _dump_call_ir(proc.pid, tmp)
            stats = commandstats(r)
            usec = sum(u for c, (_, u) in stats.items() if c in TOP_LEVEL)
            cmds = ",".join(
                f"{c}x{calls / a.n:g}"
                for c, (calls, _) in sorted(stats.items())
                if c not in ("config|resetstat", "info")
            )
            print(f"{name:24} {usec / a.n:10.2f} {ir / a.n:12.0f}  {cmds}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
