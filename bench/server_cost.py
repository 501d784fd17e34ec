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
hash), ``put`` / ``get`` (one entry, through the library), ``incr`` (``incr(key, 1)`` of
one counter), ``create`` (``create(key, value)`` of a new key each call), ``lock``
(acquire + release, per pair), ``base.lock`` (SET NX PX + a Lua
compare-and-delete, per pair), ``put_many(100)`` vs ``base.cas_xadd.x100`` (100 bare CAS
calls in one pipeline): per round, so divide by 100 for an item; ``get_many(100)`` (100
small entries, one call) per round too; ``merge(32)``: the contended merge's write, one
field of an object that holds 32 fields, merged in the script (a merge-strategy
namespace); ``merge_text(32)`` and ``merge_nested(32)`` the same with short strings and
with small containers for values; ``merge_deep(32)`` an object into one of 32 objects (a
patch with an object in it: the merge goes member by member, at each depth).

And the floor under any script-based read (a Redis Function, FCALL_RO, loaded once):
``floor.fcall_ro`` runs an empty function with the 18 key names and 4 arguments a ``get``
of one entry passes; ``floor.fcall_ro.hgetall`` a function that only returns HGETALL of
the entry-shaped hash (the cost of moving its 18 reply elements into Lua and back out);
``floor.fcall_ro.packed`` / ``floor.fcall_ro.get`` one that returns the two stored fields
of a packed entry, called with the key names and arguments of read.lua's get (9 names,
4 arguments) / of get.lua (4 names and 2 arguments since stop 35; 7 and 3 before).

And the floor under a write and a lock that keep every guarantee: ``floor.put`` is a
function that makes exactly the Redis calls a put of one small entry makes (read from
``MONITOR``, again in stop 25: the meta and ACL reads, TIME, the op-id lookup, the entry
read, the sweep hint's EXISTS, the op id's index, the stats counter, the event's XADD
and doorbell, the entry, meta and op-record writes, with the texts they write), with the
put's key names and argument count and no logic but what joins its arguments into those
calls (``PUT_FLOOR_CALLS``); ``floor.lock`` the same for an
acquire and a release (per pair); ``floor.get`` the same for a get (FCALL_RO: the
caller's level from the ACL hash, the sweep hint's EXISTS, the entry's two fields),
with get.lua's names and arguments and its reply. What a put, a get or a lock pair
costs above its floor is the Lua around the calls; what the floor costs above
``base.cas_xadd`` / ``base.hgetall`` / ``base.lock`` is what the guarantees' calls cost,
whatever the script does around them.

``--knockout`` (best with ``--callgrind``): floor.put whole, then once without each of its
calls in turn (each in a namespace of its own): what each call costs a put.
"""

from __future__ import annotations

import argparse
import itertools
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
MERGE_NS = "bench-cost-merge"
FLOOR_LIBRARY = """#!lua name=smfloor
redis.register_function{function_name='smfloor_empty', flags={'no-writes'},
  callback=function(keys, args) return 1 end}
redis.register_function{function_name='smfloor_hgetall', flags={'no-writes'},
  callback=function(keys, args) return redis.call('HGETALL', keys[1]) end}
redis.register_function{function_name='smfloor_packed', flags={'no-writes'},
  callback=function(keys, args) return redis.call('HMGET', keys[8], 'm', 'v') end}
redis.register_function{function_name='smfloor_get', flags={'no-writes'},
  callback=function(keys, args) return redis.call('HMGET', keys[#keys], 'm', 'v') end}
redis.register_function{function_name='smfloor_getcalls', flags={'no-writes'},
  callback=function(keys, args)
  redis.call('HMGET', keys[1], args[1], '#')
  redis.call('EXISTS', keys[2], keys[3])
  local h = redis.call('HMGET', keys[4], 'm', 'v')
  return 'ok 0 ' .. #h[1] .. ' ' .. h[1] .. h[2]
end}
redis.register_function('smfloor_acquire', function(keys, args)
  redis.call('HMGET', keys[2], args[1], '#')
  local t = redis.call('TIME')
  local ms, name, owner = t[1] .. string.sub(t[2], 1, 3), args[3], args[4]
  redis.call('HMGET', keys[8], name, '\\0lt')
  redis.call('ZRANGE', keys[7], 0, 0, 'WITHSCORES')
  redis.call('HINCRBY', keys[3], 'lock_acquire', 1)
  local token = t[1] .. t[2]
  redis.call('HSET', keys[8], name,
    '1:x' .. #owner .. ':' .. owner .. '5:bench13:' .. ms .. '16:' .. token, '\\0lt', token)
  redis.call('ZADD', keys[7], ms, name)
  return 'ok ' .. token .. ' ' .. ms .. ' ' .. ms
end)
redis.register_function('smfloor_release', function(keys, args)
  redis.call('HMGET', keys[2], args[1], '#')
  local t = redis.call('TIME')
  local ms, name = t[1] .. string.sub(t[2], 1, 3), args[3]
  redis.call('HGET', keys[9], name)
  redis.call('RPUSH', keys[6], ms .. ' ' .. args[5])
  redis.call('HINCRBY', keys[3], 'lock_release', 1)
  redis.call('ZREM', keys[7], 'bench\\0l' .. name)
  redis.call('HSETNX', keys[5], args[5], 'released')
  redis.call('ZREM', keys[8], name)
  redis.call('HDEL', keys[9], name)
  redis.call('SPUBLISH', keys[10], name)
  return 'ok'
end)
"""
# floor.put's body: a put's Redis calls (MONITOR of a put of an entry's third version,
# stop 25), in its order, with its key names (put.lua's since stop 28: keys[1] meta, [2]
# acl, [3] stats, [5] exp, [6] events, [8] ops, [9] opst, [10] bell, [11] lease, [12] the
# entry) and arguments (args[1] agent, [2] op id, [5] key, [6] value, [7] digest); ``ms`` and
# ``rev`` are made by the line after TIME. ``--knockout`` runs it without one call at a
# time: what each call costs the put (``put_floor_body``).
PUT_FLOOR_CALLS = (
    "local meta = redis.call('HMGET', keys[1], 'state', 'cfg', 'n', 'b', 'rev')",
    "redis.call('HGET', keys[2], args[1])",
    "local t = redis.call('TIME')",
    "redis.call('HGET', keys[8], op)",
    "redis.call('HMGET', keys[12], 'm', 'v', 'eo')",
    "redis.call('EXISTS', keys[5], keys[11])",
    "redis.call('RPUSH', keys[9], ms .. ' ' .. op)",
    "redis.call('HINCRBY', keys[3], 'put', 1)",
    "redis.call('XADD', keys[6], rev .. '-0', 't', 'put', 'k', args[5], 'v', '3', 'a', args[1],"
    " 'ms', ms, 'n', '1', 'd', args[6])",
    "redis.call('SPUBLISH', keys[10], #rev .. ':' .. rev .. '1:13:put1:' .. args[5] .. '1:3'"
    " .. #args[6] .. ':' .. args[6] .. '4:json1:15:bench13:' .. ms)",
    "redis.call('HSET', keys[12], 'v', args[6], 'm', '3 2 ' .. rev .. ' ' .. ms .. ' ' .. ms"
    " .. ' 0 bench ')",
    "redis.call('HSET', keys[1], 'rev', rev)",
    "redis.call('HSET', keys[8], op, 'w1 ' .. args[7] .. ' ' .. rev .. ' ' .. ms"
    " .. ' 1 0 0|w 3 2 ' .. ms .. ' 0 62|')",
)
# What stands in for a knocked-out call whose result the body uses, by the local it sets.
_KNOCKED_OUT = {"meta": "local meta = {}", "t": "local t = {'1700000000', '123456'}"}


def put_floor_body(without: int | None = None, rev: str = "tostring((meta[5] or 0) + 1)") -> str:
    """floor.put's Lua body, optionally without call ``without`` (an index into
    PUT_FLOOR_CALLS) and with the revision (text) from ``rev``, a Lua expression."""
    lines = []
    for i, call in enumerate(PUT_FLOOR_CALLS):
        line = call
        if i == without:
            sets = re.match(r"local (\w+) =", call)
            line = _KNOCKED_OUT[sets.group(1)] if sets else "-- (knocked out)"
        lines.append(line)
        if call.startswith("local t ="):
            lines.append(f"local ms, op, rev = t[1] .. string.sub(t[2], 1, 3), args[2], {rev}")
    # (a string, as a put answers "ok" since stop 34: _ops/replies.py unpack_put)
    return "\n".join(lines) + "\nreturn 'ok ' .. rev .. ' ' .. ms"


FLOOR_LIBRARY += (
    "redis.register_function('smfloor_put', function(keys, args)\n" + put_floor_body() + "\nend)\n"
)
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


def load_floor_library(r: redis.Redis, what: str) -> bool:
    """FLOOR_LIBRARY into the server, or False where it loads no Functions (``what``, the
    cases skipped, is said so)."""
    try:
        r.function_load(FLOOR_LIBRARY, replace=True)
    except redis.ResponseError as exc:
        print(f"  ({what} skipped: the server loads no Functions: {exc})")
        return False
    return True


def put_floor_caller(
    r: redis.Redis, function: str, prefix: str, namespace: str, body: str, *, rev_arg: bool = False
) -> Callable[[], None]:
    """A caller of a put floor (``smfloor_put``, or a knockout's function): a put's key
    names in ``namespace`` (lua/put.lua: 11 fixed names + the entry and its history) and
    its arguments (7 + the identity key), a new op id per call.
    ``rev_arg``: the call's count as one more argument, before the identity key (the
    knockout's revision). Sizes the namespace's op-record hash as a put's records do
    (values over 64 bytes: a hash table, not a listpack scanned field by field)."""
    from swarm_memory.keys import NamespaceKeys, identity_key

    nk = NamespaceKeys.of(prefix, namespace)
    keys = [*nk.put_fixed(), nk.entry("p"), nk.history("p")]
    r.hset(nk.ops, "floor-init", "x" * 100)
    head = ("FCALL", function, len(keys), *keys, "bench")
    ident = identity_key(prefix, "bench")
    seq = [0]

    def call() -> None:
        seq[0] += 1
        extra = (str(seq[0]),) if rev_arg else ()
        r.execute_command(
            *head, f"floor{seq[0]:017d}", "300000 100000 10000 1048576 1024", "P   json",
            "p", body, "6bba1536e2da5084963f152b", *extra, ident,
        )  # fmt: skip

    return call


def write_floors(
    r: redis.Redis, prefix: str, body: str
) -> tuple[Callable[[], None], Callable[[], None]]:
    """``floor.put`` and ``floor.lock`` (see the module doc): a put's and a lock's key names
    and argument counts (put_floor_caller; lua/acquire.lua and lua/release.lua: 8 and 10
    names, 7 arguments + the identity key each), in a namespace of their own. A new op id
    and lock owner per call."""
    from swarm_memory.keys import NamespaceKeys, identity_key

    # (put_floor_caller sizes the op-record hash the lock floor's releases write too)
    floor_put = put_floor_caller(r, "smfloor_put", prefix, "bench-floor", body)
    fk = NamespaceKeys.of(prefix, "bench-floor")
    acquire_keys, release_keys = fk.acquire_fixed(), fk.release_fixed()
    ident = identity_key(prefix, "bench")
    seq = [0]

    def floor_lock() -> None:
        seq[0] += 1
        owner = f"owner{seq[0]:017d}"
        acq = ("FCALL", "smfloor_acquire", len(acquire_keys), *acquire_keys, "bench", "10000")
        rel = ("FCALL", "smfloor_release", len(release_keys), *release_keys, "bench", "10000")
        r.execute_command(*acq, "L", owner, "30000", "x", "", ident)
        r.execute_command(*rel, "L", owner, owner + ":r", "1", "2", ident)

    return floor_put, floor_lock


def get_floor(
    r: redis.Redis, prefix: str, namespace: str, key: str, agent: str = "bench"
) -> Callable[[], Any]:
    """``floor.get`` (see the module doc): a Redis Function making exactly a get's Redis
    calls (lua/get.lua: the caller's level from the ACL hash, the sweep hint's EXISTS, the
    entry's two fields) with its 4 key names and 2 arguments (since stop 35: 7 and 3
    before), answering a get's reply for one entry. ``key``: an entry of ``namespace``, a
    namespace that exists (its ACL hash and the entry are read as a get reads them)."""
    from swarm_memory.keys import NamespaceKeys, identity_key

    nk = NamespaceKeys.of(prefix, namespace)
    keys = [*nk.get_fixed(), nk.entry(key)]
    command = ("FCALL_RO", "smfloor_getcalls", len(keys), *keys, agent)
    ident = identity_key(prefix, agent)
    return lambda: r.execute_command(*command, ident)


def merge_cases(mem: Any) -> tuple[Callable[[], None], ...]:
    """``merge(32)``, ``merge_text(32)``, ``merge_nested(32)``, ``merge_deep(32)`` (see the
    module doc), in a merge-strategy namespace of their own: the contended merge's write
    (bench/contention.py: one worker's field into an object that holds 32 workers'
    counts), and the same with short strings (an agent's findings, say), with small
    containers (a list holding an object) for values, and with an object merged into an
    object (an agent's own part of a shared status: {"w7": {"n": 1007}} into
    {"w7": {"n": 7, "tags": [...]}, ...})."""
    mem.create_namespace(MERGE_NS, strategy="merge", exist_ok=True)
    mns = mem.namespace(MERGE_NS)

    def case(key: str, value_of: Callable[[int], Any]) -> Callable[[], None]:
        mns.put(key, {f"w{w}": value_of(w) for w in range(32)})
        n = [0]

        def merge() -> None:
            n[0] += 1
            mns.put(key, {f"w{n[0] % 32}": value_of(1000 + n[0])})

        return merge

    def deep(key: str) -> Callable[[], None]:
        mns.put(key, {f"w{w}": {"n": w, "tags": ["a", "b"]} for w in range(32)})
        n = [0]

        def merge() -> None:
            n[0] += 1
            mns.put(key, {f"w{n[0] % 32}": {"n": 1000 + n[0]}})

        return merge

    return (
        case("m", lambda i: 1000 + i),
        case("s", lambda i: f"finding {i}"),
        case("n", lambda i: [i, {"x": i}]),
        deep("d"),
    )


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
    fresh = itertools.count()  # a create's key: a new one each call
    r.function_load(FLOOR_LIBRARY, replace=True)
    floor_keys = [f"sm:{{{NS}}}:k{i}" for i in range(18)]
    floor_args = ["bench", "10000", "get", "sm:id:bench"]
    nk = NamespaceKeys.of(mem.settings.key_prefix, NS)
    get_keys = [*nk.read_fixed(), nk.entry("g"), nk.history("g")]
    get_only_keys = [*nk.get_fixed(), nk.entry("g")]
    ns.put_many({f"gm{i}": VALUE for i in range(100)})
    gm_keys = [f"gm{i}" for i in range(100)]
    floor_put, floor_lock = write_floors(r, mem.settings.key_prefix, body)
    merge32, merge32_text, merge32_nested, merge32_deep = merge_cases(mem)
    return {
        "floor.put": floor_put,
        "floor.get": get_floor(r, mem.settings.key_prefix, NS, "g"),
        "floor.lock": floor_lock,
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
        # The get script's shape (lua/get.lua: 4 key names and 2 arguments since stop 35,
        # 7 and 3 from stop 22), returning the stored entry's two fields and nothing else.
        "floor.fcall_ro.get": lambda: r.execute_command(
            "FCALL_RO", "smfloor_get", 4, *get_only_keys, floor_args[0], floor_args[3]
        ),
        "base.cas_xadd": cas,
        "base.cas_xadd.x100": cas_x100,
        "put_many(100)": lambda: ns.put_many(many),
        "base.hgetall": lambda: r.hgetall("bare:h"),
        "put": lambda: ns.put("p", VALUE),
        "incr": lambda: ns.incr("c", 1),
        "create": lambda: ns.create(f"new{next(fresh)}", VALUE),
        "merge(32)": merge32,
        "merge_text(32)": merge32_text,
        "merge_nested(32)": merge32_nested,
        "merge_deep(32)": merge32_deep,
        "get": lambda: ns.get("g"),
        "get_many(100)": lambda: ns.get_many(gm_keys),
        "base.lock": base_lock,
        "lock": lock,
    }


def knockout_cases(r: redis.Redis, prefix: str, body: str) -> dict[str, Callable[[], None]]:
    """``--knockout``: floor.put whole and without each of its calls in turn (a Function
    each, every one in a namespace of its own, the revision from a counter argument so
    that a body without the meta read or write still appends to its feed). What a call
    costs the put is the whole floor's instructions less those without it."""
    lib = ["#!lua name=smko"]
    for k in range(-1, len(PUT_FLOOR_CALLS)):
        without = None if k < 0 else k
        lib.append(f"redis.register_function('smko_{k + 1}', function(keys, args)")
        lib += [put_floor_body(without, rev="args[8]"), "end)"]
    r.function_load("\n".join(lib), replace=True)
    out: dict[str, Callable[[], None]] = {}
    for k in range(len(PUT_FLOOR_CALLS) + 1):
        call = put_floor_caller(r, f"smko_{k}", prefix, f"bench-ko{k}", body, rev_arg=True)
        call_of = re.search(r"redis\.call\('(\w+)'(?:, (keys\[\d+\]))?", PUT_FLOOR_CALLS[k - 1])
        name = (
            "floor.put"
            if k == 0 or call_of is None
            else f"without {' '.join(filter(None, call_of.groups()))}"
        )
        out[name] = call
    return out


def _measure(
    r: redis.Redis, fn: Callable[[], Any], a: argparse.Namespace, pid: int, tmp: str
) -> tuple[float, dict[str, tuple[int, int]]]:
    """``fn`` warmed up (script loads, first writes), then run ``a.n`` times: the server's
    instructions per call inside commands (with ``--callgrind``, else 0) and the
    commandstats of those calls."""
    for _ in range(20):
        fn()
    r.config_resetstat()
    if a.callgrind:
        _dump_call_ir(pid, tmp)
        _collect(pid, True)
    for _ in range(a.n):
        fn()
    ir = 0.0
    if a.callgrind:
        _collect(pid, False)
        ir = _dump_call_ir(pid, tmp) / a.n
    return ir, commandstats(r)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--callgrind", action="store_true")
    p.add_argument("--only", default="")
    p.add_argument(
        "--knockout",
        action="store_true",
        help="floor.put without each of its calls in turn (what each call costs a put)",
    )
    a = p.parse_args(argv)
    if a.callgrind and not shutil.which("valgrind"):
        print("valgrind not found", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="sm-cost-")
    proc, port = _start(a.callgrind, tmp)
    try:
        r = redis.Redis(port=port)
        if a.knockout:
            return _run_knockout(a, r, proc.pid, tmp)
        fns = cases(port)
        only = [c for c in a.only.split(",") if c]
        print(f"{'case':24} {'usec/call':>10} {'Ir/call':>12}  commands")
        for name, fn in fns.items():
            if only and name not in only:
                continue
            ir, stats = _measure(r, fn, a, proc.pid, tmp)
            usec = sum(u for c, (_, u) in stats.items() if c in TOP_LEVEL)
            cmds = ",".join(
                f"{c}x{calls / a.n:g}"
                for c, (calls, _) in sorted(stats.items())
                if c not in ("config|resetstat", "info")
            )
            print(f"{name:24} {usec / a.n:10.2f} {ir:12.0f}  {cmds}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _run_knockout(a: argparse.Namespace, r: redis.Redis, pid: int, tmp: str) -> int:
    cases = knockout_cases(r, "sm", encode(VALUE))
    whole = 0.0
    print(f"{'case':60} {'Ir/call' if a.callgrind else 'usec/call':>12} {'the call costs':>15}")
    for name, fn in cases.items():
        ir, stats = _measure(r, fn, a, pid, tmp)
        cost = ir if a.callgrind else stats.get("fcall", (0, 0))[1] / a.n
        if name == "floor.put":
            whole = cost
            print(f"{name:60} {cost:12,.1f}")
        else:
            print(f"{name:60} {cost:12,.1f} {whole - cost:15,.1f}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
