"""Where a script's Lua runs: ``python -m bench.lua_profile [put|merge|get] [-n 400]``.

Counts the Lua VM instructions one call of a script executes, per function and per line
of the library, repeatably (no timing at all). It starts its own ``redis-server`` (never
6379), makes the case's call once for real to record its keys and arguments (a
``observe_scripts`` observer) and the namespace's keys as they were before it (every
field, member and element), then runs the library's Functions source in Lua 5.1 (lupa's
``lupa.lua51``, the Lua of Redis's scripting) with a stand-in ``redis`` table over a copy
of those keys, calls the function ``-n`` times (a fresh op id each), and counts the
instructions with ``debug.sethook`` (a count hook that fires on every instruction).

What it measures and what it does not: the VM's own work (dispatch, table access,
arithmetic, calls between Lua functions), where a script's lines cost what they cost.
The C side is not in it: the commands themselves, Redis's conversion of arguments and
replies, the pattern matcher (``string.find``/``match``/``gsub`` cost per character, not
per instruction), allocation and collection. For those, ``bench.server_cost --callgrind``
counts the server's instructions. The stand-in ``redis`` answers the commands a put, a
merge and a get make (HMGET, HGET, HSET, HINCRBY, EXISTS, TIME, RPUSH, LRANGE, XADD,
SPUBLISH, ZADD, ZREM, ZSCORE, TYPE, ...) from the recorded keys; a command it does not
know stops the run with its name.

Cases: ``put`` (the suite's value over an entry written 20 times), ``merge``
(``bench.server_cost``'s ``merge(32)``: one field into an object of 32), ``get`` (one
entry), ``acquire`` and ``release`` (a lock's two calls, as ``bench.server_cost``'s
``lock`` makes them: an exclusive lock that is free, then the release of the acquire's
hold). Every call of the ``-n`` starts from the recorded keys and the recorded clock (a
lock's second acquire would find it held, its second release not held).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import Any

from bench.harness import VALUE

CASES = ("put", "merge", "get", "acquire", "release")

# The stand-in for Redis's `redis` table, over STORE (key -> {t = type, v = value}).
MOCK_REDIS = r"""
local STORE, CLOCK = ...
local function get(k, t)
  local e = STORE[k]
  if e and t and e.t ~= t then return nil, { err = "WRONGTYPE" } end
  return e
end
local function mk(k, t, v)
  local e = STORE[k]
  if not e then e = { t = t, v = v }; STORE[k] = e end
  return e
end
local C = {}
C.HMGET = function(k, ...)
  local e, er = get(k, "hash"); if er then return er end
  local r = {}
  for i, f in ipairs({ ... }) do r[i] = e and e.v[f] or false end
  return r
end
C.HGET = function(k, f)
  local e, er = get(k, "hash")
  if er then return er end
  return e and e.v[f] or false
end
C.HGETALL = function(k)
  local e, er = get(k, "hash"); if er then return er end
  local r = {}
  if e then for f, v in pairs(e.v) do r[#r + 1] = f; r[#r + 1] = v end end
  return r
end
C.HSTRLEN = function(k, f)
  local e = get(k, "hash")
  local v = e and e.v[f]
  return v and #v or 0
end
C.HSET = function(k, ...)
  local e, a, n = mk(k, "hash", {}), { ... }, 0
  for i = 1, #a, 2 do if e.v[a[i]] == nil then n = n + 1 end e.v[a[i]] = a[i + 1] end
  return n
end
C.HSETNX = function(k, f, v)
  local e = mk(k, "hash", {})
  if e.v[f] then return 0 end
  e.v[f] = v
  return 1
end
-- HDEL and ZREM: the named fields or members removed, how many were there
local function remover(kind)
  return function(k, ...)
    local e, n = get(k, kind), 0
    if e then for _, f in ipairs({ ... }) do if e.v[f] then n = n + 1; e.v[f] = nil end end end
    return n
  end
end
C.HDEL = remover("hash")
C.HINCRBY = function(k, f, d)
  local e = mk(k, "hash", {})
  local v = tonumber(e.v[f] or "0") + tonumber(d)
  e.v[f] = tostring(v)
  return v
end
C.EXISTS = function(...)
  local n = 0
  for _, k in ipairs({ ... }) do if STORE[k] then n = n + 1 end end
  return n
end
C.TIME = function()
  CLOCK = CLOCK + 1
  return { tostring(math.floor(CLOCK / 1000)), tostring(CLOCK % 1000 * 1000) }
end
-- A copy of the keys FROM (one level deep: a key's fields, members or elements).
local function copied(from)
  local to = {}
  for k, e in pairs(from) do
    local v = e.v
    if type(v) == "table" then
      local c = {}
      for f, x in pairs(v) do c[f] = x end
      v = c
    end
    to[k] = { t = e.t, v = v }
  end
  return to
end
-- A function that puts the keys and the clock back as they are now (a lock's calls).
local function rewinder()
  local snap, start = copied(STORE), CLOCK
  return function()
    for k in pairs(STORE) do STORE[k] = nil end
    for k, e in pairs(copied(snap)) do STORE[k] = e end
    CLOCK = start
  end
end
C.RPUSH = function(k, ...)
  local e = mk(k, "list", {})
  for _, x in ipairs({ ... }) do e.v[#e.v + 1] = x end
  return #e.v
end
C.LRANGE = function(k, a, b)
  local e, r = get(k, "list"), {}
  if not e then return r end
  a, b = tonumber(a), tonumber(b)
  if b < 0 then b = #e.v + b end
  for i = a + 1, math.min(b + 1, #e.v) do r[#r + 1] = e.v[i] end
  return r
end
C.LTRIM = function(k, a, b)
  local e = get(k, "list"); if not e then return { ok = "OK" } end
  a, b = tonumber(a), tonumber(b)
  if b < 0 then b = #e.v + b end
  local n = {}
  for i = a + 1, math.min(b + 1, #e.v) do n[#n + 1] = e.v[i] end
  e.v = n
  return { ok = "OK" }
end
C.XADD = function(k, ...)
  local e = mk(k, "stream", 0)
  e.v = e.v + 1
  for _, a in ipairs({ ... }) do if string.match(a, "^%d+%-%d+$") then return a end end
  return "0-1"
end
C.SPUBLISH = function() return 0 end
C.PUBLISH = C.SPUBLISH
C.ZADD = function(k, ...)
  local e, a, i, n = mk(k, "zset", {}), { ... }, 1, 0
  while a[i] == "NX" or a[i] == "XX" or a[i] == "GT" or a[i] == "LT" or a[i] == "CH" do
    i = i + 1
  end
  for j = i, #a, 2 do
    if not e.v[a[j + 1]] then n = n + 1 end
    e.v[a[j + 1]] = tonumber(a[j])
  end
  return n
end
C.ZREM = remover("zset")
C.ZSCORE = function(k, m)
  local e = get(k, "zset")
  local s = e and e.v[m]
  return s and tostring(s) or false
end
-- ZRANGE by rank (start stop [WITHSCORES]), members in score order
C.ZRANGE = function(k, a, b, withscores)
  local e, all, r = get(k, "zset"), {}, {}
  if e then for m, sc in pairs(e.v) do all[#all + 1] = { m, sc } end end
  table.sort(all, function(x, y) return x[2] < y[2] or (x[2] == y[2] and x[1] < y[1]) end)
  a, b = tonumber(a), tonumber(b)
  if b < 0 then b = #all + b end
  for i = a + 1, math.min(b + 1, #all) do
    r[#r + 1] = all[i][1]
    if withscores then r[#r + 1] = tostring(all[i][2]) end
  end
  return r
end
C.ZCARD = function(k)
  local e, n = get(k, "zset"), 0
  if e then for _ in pairs(e.v) do n = n + 1 end end
  return n
end
C.TYPE = function(k) local e = STORE[k]; return { ok = e and e.t or "none" } end
local function dispatch(name, ...)
  local f = C[string.upper(name)]
  if not f then error("bench.lua_profile: the stand-in redis has no " .. name) end
  return f(...)
end
return {
  call = function(...)
    local r = dispatch(...)
    if type(r) == "table" and r.err then error(r.err) end
    return r
  end,
  pcall = dispatch,
  acl_check_cmd = function() return true end,
  error_reply = function(m) return { err = m } end,
  status_reply = function(m) return { ok = m } end,
  log = function() end,
  LOG_WARNING = 3,
  setresp = function() end,
  rewinder = rewinder,
}
"""

# Runs FN(KEYS, ARGV) N times under a count hook; returns {line = count} and the reply.
# reset: nil, or a function run before each call, outside the hook (the stand-in's keys
# and clock as recorded).
RUNNER = r"""
local fn, keys, args, n, source, op_arg, reset = ...
local counts, reply = {}, nil
local getinfo = debug.getinfo
local function hook()
  local info = getinfo(2, "Sl")
  if info.source == source then
    local l = info.currentline
    counts[l] = (counts[l] or 0) + 1
  end
end
for i = 1, n do
  local K, A = {}, {}
  for j = 1, #keys do K[j] = keys[j] end
  for j = 1, #args do A[j] = args[j] end
  if op_arg > 0 then A[op_arg] = A[op_arg] .. "-" .. i end
  if reset then reset() end
  debug.sethook(hook, "", 1)
  local r = fn(K, A)
  debug.sethook()
  if i == 1 then reply = r end
end
return counts, reply
"""


def _snapshot(raw: Any, pattern: str) -> dict[str, tuple[str, Any]]:
    """Every key matching ``pattern`` as (type, contents) the stand-in keeps."""
    out: dict[str, tuple[str, Any]] = {}
    for k in raw.scan_iter(match=pattern, count=1000):
        kind = raw.type(k).decode()
        name = k.decode()
        if kind == "hash":
            out[name] = (kind, {a.decode(): b.decode() for a, b in raw.hgetall(k).items()})
        elif kind == "list":
            out[name] = (kind, [x.decode() for x in raw.lrange(k, 0, -1)])
        elif kind == "zset":
            out[name] = (kind, {m.decode(): s for m, s in raw.zrange(k, 0, -1, withscores=True)})
        elif kind == "stream":
            out[name] = (kind, raw.xlen(k))
        elif kind == "string":
            out[name] = (kind, raw.get(k).decode())
    return out


def record(case: str) -> tuple[str, list[str], list[str], dict[str, tuple[str, Any]], int]:
    """(script, keys, args, the namespace's keys before the call, the server's clock in ms
    then) of one real call."""
    from bench.server_cost import MERGE_NS, merge_cases
    from swarm_memory import SwarmMemory
    from swarm_memory.keys import identity_key
    from tests.servers import RedisServer

    server = RedisServer()
    server.start()
    try:
        mem = SwarmMemory.from_url(server.url, agent="bench")
        calls: list[tuple[str, list[str], list[Any]]] = []
        call: Callable[[], Any]
        if case == "merge":  # bench.server_cost's merge(32)
            namespace, call = MERGE_NS, merge_cases(mem)[0]
        elif case in ("acquire", "release"):  # bench.server_cost's lock, one call of it
            namespace = "prof"
            mem.create_namespace(namespace, exist_ok=True)
            ns = mem.namespace(namespace)
            for _ in range(20):
                with ns.lock("L", ttl=30):
                    pass
            lock = ns.lock("L", ttl=30)
            call = lock.acquire if case == "acquire" else lock.release
            if case == "release":
                lock.acquire()
        else:
            namespace = "prof"
            mem.create_namespace(namespace, exist_ok=True)
            ns = mem.namespace(namespace)
            for _ in range(20):
                ns.put("k", VALUE)
            call = (lambda: ns.put("k", VALUE)) if case == "put" else (lambda: ns.get("k"))

        if case != "release":
            call()
        if case == "acquire":
            lock.release()
        before = _snapshot(server.client(), f"*{{{namespace}}}*")
        seconds, micros = server.client().time()
        clock = seconds * 1000 + micros // 1000
        mem.observe_scripts(lambda s, k, a: calls.append((s, list(k), list(a))))
        call()
        script, keys, args = calls[-1]
        ident = identity_key(mem.settings.key_prefix, mem.agent)
        texts = [a.decode() if isinstance(a, bytes) else str(a) for a in args]
        if not texts or texts[-1] != ident:
            texts.append(ident)  # (the client appends it as it sends: Script.identity_args)
        mem.close()
        return script, keys, texts, before, clock
    finally:
        server.stop()


def _owners(lines: list[str]) -> list[str]:
    """The library function each line of the source belongs to (by its definition)."""
    owner, out = "(top level)", []
    for line in lines:
        m = re.match(r"local function (\w+)", line)
        if m:
            owner = m.group(1)
        out.append(owner)
    return out


def profile(case: str, n: int) -> tuple[dict[int, float], list[str], Any]:
    """Per-line VM instructions per call, the library's lines, and the first reply."""
    from lupa.lua51 import LuaRuntime

    from swarm_memory.scripts import library

    script, keys, args, before, clock = record(case)
    lib = library()
    lua = LuaRuntime(unpack_returned_tuples=True)
    store = lua.table()
    for name, (kind, contents) in before.items():
        value = lua.table_from(contents) if isinstance(contents, (dict, list)) else contents
        store[name] = lua.table_from({"t": kind, "v": value})
    lock_case = case in ("acquire", "release")
    # (a lock's expiry is the real clock's: its call runs at the clock it was recorded at)
    start = clock if lock_case else 1_800_000_000_000
    lua.globals().redis = lua.execute(MOCK_REDIS, store, start)
    reset = lua.globals().redis.rewinder() if lock_case else None
    functions: dict[str, Any] = {}

    def register(name: Any, fn: Any = None) -> None:
        if fn is None:  # the table form: {function_name = ..., callback = ...}
            name, fn = name["function_name"], name["callback"]
        functions[str(name)] = fn

    lua.globals().redis.register_function = register
    source = lib.source.split("\n", 1)[1]  # without the "#!lua name=" line
    chunk_name = "=swarm_memory"
    lua.globals().loadstring(source, chunk_name)()
    fn = next(f for name, f in functions.items() if name.endswith("_" + script))
    op_arg = 2 if script in ("write", "put") else 0  # a fresh op id each call (no replay)
    counts, reply = lua.execute(
        RUNNER, fn, lua.table_from(keys), lua.table_from(args), n, chunk_name, op_arg, reset
    )
    per_line = {int(line): c / n for line, c in counts.items()}
    lines = source.split("\n")
    # (a packed reply, a string: its fields, as the client splits them)
    first = list(reply.values()) if hasattr(reply, "values") else str(reply).split(" ")
    return per_line, lines, first


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case", choices=CASES, nargs="?", default="put")
    p.add_argument("-n", type=int, default=400, help="calls counted")
    p.add_argument("--lines", type=int, default=25, help="the costliest lines shown")
    a = p.parse_args(argv)
    per_line, lines, reply = profile(a.case, a.n)
    owners = _owners(lines)
    total = sum(per_line.values())
    by_function: dict[str, float] = {}
    for line, c in per_line.items():
        owner = owners[line - 1] if line <= len(owners) else "(?)"
        by_function[owner] = by_function.get(owner, 0.0) + c
    print(f"{a.case}: {total:,.0f} Lua VM instructions a call (n={a.n}); reply {reply[:4]!r}")
    print(f"{'instructions':>12}  function")
    for name, c in sorted(by_function.items(), key=lambda x: -x[1]):
        print(f"{c:12.1f}  {name}")
    print(f"{'instructions':>12}  line  text")
    for line, c in sorted(per_line.items(), key=lambda x: -x[1])[: a.lines]:
        text = lines[line - 1].strip() if line <= len(lines) else ""
        print(f"{c:12.1f}  {line:4d}  {text[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
