-- Shared helpers (swarm_memory/scripts.py). The loader gives each script only the parts
-- of this file it uses: a part is one top-level `local` definition with the comment above
-- it, and a script gets every part its body names, directly or through another part, in
-- this file's order. The script's body becomes the body of an entry function, called
-- once per EVALSHA (the script ends by calling it) or registered with
-- redis.register_function in one library (FCALL) on servers with Functions, where this
-- file's code runs once when the library loads, not before every call.
--
-- Per-call state, always included: assigned by enter() before every body runs. Every
-- namespace script receives the sixteen fixed names first, in this order (built in
-- keys.py). K_BELL and K_LBELL are not keys but the namespace's shard channels (the
-- pub/sub doorbells of the feed and of lock releases): they carry the same hash tag, and
-- passing them with the keys keeps every name a script touches out of Lua and in one
-- Cluster slot. A script whose header names only some of the sixteen (read.lua: each
-- name a call passes costs the server ~1.2k instructions) gets those, in the header's
-- order: its entry function assigns them (and nil to the others) before enter()
-- (scripts.py, _entry), and N_FIXED is their number.
local KEYS, ARGV
local K_META, K_ACL, K_STATS, K_IDX, K_LRU, K_EXP, K_EVENTS, K_AUDIT, K_OPS, K_OPST, K_BELL
local K_LEASE, K_EPH, K_LOCKS, K_LOCKH, K_LBELL
local N_FIXED = 16
local IDENTITY_KEY
local NOW_TIME -- the call's TIME reply, once read (server_time)
local NOW_MS -- the same in milliseconds, once computed (now_ms)
local NOW_US -- and in microseconds (now_ms computes both: one parse of TIME's reply)
-- Events of one call, queued by event() and appended by publish_events().
local PENDING_EVENTS = {}
-- Redis's and Lua's functions, as upvalues of the library (stop 33). Under FCALL a global
-- name is found through the globals table's metatable: ~200 instructions a use, ~280 for
-- `redis.call` (a put used 27 a call, ~6k instructions; a get 5). A library's code runs
-- at FUNCTION LOAD with `redis` alone (register_function, log; reading any other global
-- is an error there), so `redis` starts as that one and enter() takes the call's `redis`
-- and the rest on the first call in a state (adopt_runtime). Under EVALSHA this code runs
-- before every call, and so does that.
local redis = redis
-- (nil until adopt_runtime has taken them: enter() tests `string`)
local string, table, math, type, tonumber, tostring, pairs, ipairs, unpack, pcall, error
--- end of per-call state

-- The pace of the Lua collector (stop 33; docs/performance.md, "The Lua collector's
-- pace"). After every 50th script call Redis runs lua_gc(LUA_GCSTEP, 50) on the state the
-- scripts run in: 50 collector steps of ~10 x stepmul units each, whatever the calls
-- allocated. At Lua's default step multiplier (200) that is ~100k units of marking and
-- sweeping over the whole state (this library and its memos: ~0.6 MB) per 50 calls:
-- ~6k instructions of every call, 11 % of a get. At 25 those steps do an eighth of that,
-- and the collector keeps up with allocation at a quarter of its speed, so the state holds
-- more garbage between cycles: at most 0.5-1.2 MB -> 1.0-1.9 MB with small values, 5.2 ->
-- 15 MB while merging into a 500 KB object (python -m bench.lua_heap,
-- bench/results/stop33-lua-heap.txt); Redis keeps that memory outside maxmemory.
-- The state is shared by every Functions library on the server (and every EVAL script by
-- the other state): they get the same pace. (pcall: a server without collectgarbage in its
-- scripts' globals only keeps Lua's pace.)
local GC_STEPMUL = 25

-- The call's globals as the upvalues above, and the collector's pace: on the first call in
-- a Lua state (under EVALSHA, on every call).
local function adopt_runtime()
  local G = _G
  redis, string, table, math = G.redis, G.string, G.table, G.math
  type, tonumber, tostring, pairs, ipairs = G.type, G.tonumber, G.tostring, G.pairs, G.ipairs
  unpack, pcall, error = G.unpack, G.pcall, G.error
  pcall(function() G.collectgarbage("setstepmul", GC_STEPMUL) end)
end

-- Identity (DESIGN.md decision 8, authenticated mode). The client appends the claimed
-- agent's identity key (keys.identity_key) to every call's ARGV; it is taken off here,
-- before any script reads ARGV, and checked before anything else runs. Each agent's ACL
-- user may read only its own identity key, so acl_check_cmd proves that the calling user
-- is the agent the call names (the default user passes for every agent). The key is
-- checked, never accessed. A server without ACLs in Lua (fakeredis) stays cooperative;
-- the client says which mode it is in when it connects (auth_mode).
local function identity_refused()
  if not redis.acl_check_cmd then return false end
  return not redis.acl_check_cmd("GET", IDENTITY_KEY)
end

-- Every entry function starts here: the call's KEYS and ARGV become the state above.
-- Returns the reply to send instead of running the body (an identity refusal), or nil.
-- n_fixed: nil for the sixteen names in keys.py's order; else the entry function
-- assigned the K_ names of its header's layout itself, and this is their number.
local function enter(keys, args, n_fixed)
  KEYS, ARGV = keys, args
  if n_fixed then
    N_FIXED = n_fixed
  else
    N_FIXED = 16
    K_META, K_ACL, K_STATS, K_IDX, K_LRU, K_EXP, K_EVENTS, K_AUDIT, K_OPS, K_OPST, K_BELL =
      keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7], keys[8], keys[9], keys[10], keys[11]
    K_LEASE, K_EPH, K_LOCKS, K_LOCKH, K_LBELL = keys[12], keys[13], keys[14], keys[15], keys[16]
  end
  -- The queue is emptied by publish_events; only a call that failed before it leaves
  -- events behind, so the empty table is kept rather than made anew for every call.
  if PENDING_EVENTS[1] then PENDING_EVENTS = {} end
  NOW_TIME, NOW_MS, NOW_US = nil, nil, nil
  if not string then adopt_runtime() end
  local n = #args -- table.remove, without the library call
  IDENTITY_KEY = args[n]
  args[n] = nil
  if identity_refused() then
    if #keys >= N_FIXED then
      -- A namespace script without the audit names (get.lua: only its common path's)
      -- leaves the refusal to the one its client then sends the call to (read.lua).
      if not K_AUDIT then return { "general", "identity" } end
      -- A namespace script (agent = ARGV[1]): count and audit the denial where the calling
      -- user may write (pcall: a user with read-only keys is refused, just not audited).
      redis.pcall("HINCRBY", K_STATS, "denied", 1)
      redis.pcall("XADD", K_AUDIT, "*", "a", args[1] or "", "act", "identity", "k", "", "op", "",
        "out", "denied", "r", 0)
    end
    return { "denied", "identity" }
  end
  return nil
end

local LEVEL_RANK = { none = 0, read = 1, write = 2, admin = 3 }
local RANK_NAME = { [0] = "none", [1] = "read", [2] = "write", [3] = "admin" }

-- Text -> number for integers that repeat from call to call (a client's limits, a
-- namespace's configuration): parsing one costs ~3.2k instructions (string.match and
-- tonumber's strtod), a lookup here ~0.3k. Under FCALL the table lives as long as the
-- library, under EVALSHA for one call; only text that passed the check is kept, and the
-- table starts over at 512 entries so that values that never repeat cannot grow it.
-- Two tables: int_arg's spelling rules are looser than stored_int's ("007" passes).
local INT_MEMO, INT_MEMO_N = {}, 0
local function int_memo(s, n)
  if INT_MEMO_N >= 512 then INT_MEMO, INT_MEMO_N = {}, 0 end
  INT_MEMO[s], INT_MEMO_N = n, INT_MEMO_N + 1
  return n
end
local STORED_MEMO, STORED_MEMO_N = {}, 0

-- Strict integer parsing: tonumber() would accept "0x10", " 5 ", "1e3" and "inf".
-- 16 digits at most; callers that need exactness also bound the magnitude by 2^53.
local function int_arg(s, what)
  local n = INT_MEMO[s] -- s may be nil or a number: neither is ever a key here
  if n then return n end
  if type(s) ~= "string" or not string.match(s, "^%-?%d+$") or #s > 17 then
    error("swarm_memory: bad integer for " .. what .. ": " .. tostring(s))
  end
  return int_memo(s, tonumber(s))
end

-- Data read back from Redis that does not parse, or a key of the wrong type: an error
-- naming the key by its position in KEYS, which the client maps back to the name and
-- raises as CorruptData (swarm_memory._ops.replies.script_error). Raised before the
-- script's first write wherever the script can read first (DESIGN.md decision 2).
local function corrupt(key, what)
  local at = 0
  for i = 1, #KEYS do
    if KEYS[i] == key then at = i break end
  end
  error("SMCORRUPT " .. at .. " " .. what, 0)
end

-- Integers as exact decimal text: tostring() would print 2^53 as 9.007199254741e+15.
-- "%d" (a C long: exact to 2^63) formats 2.4x faster than "%.0f" in Redis's Lua; anything
-- that is not an integer in that range keeps "%.0f".
-- The text of numbers formatted before is kept (~2k instructions a format, ~0.3k a
-- lookup): a call formats its revision and time several times, and limits, counts and
-- small sequence numbers repeat from call to call. Bounded like int_memo.
-- NUM_MEMO is the same the other way, for the exact integers (|n| < 2^53) among them:
-- their text is how Redis spells an integer, so stored_int takes a text found there
-- without parsing it (a counter or revision a write reads is the text the write before
-- it formatted; tonumber() is two strtod calls, ~1k instructions).
local TEXT_MEMO, NUM_MEMO, TEXT_MEMO_N = {}, {}, 0
local function itos(n)
  local s = TEXT_MEMO[n]
  if s then return s end
  if n % 1 == 0 and n > -9e18 and n < 9e18 then s = string.format("%d", n) else s = string.format("%.0f", n) end
  if n ~= n then return s end -- NaN: no table key
  if TEXT_MEMO_N >= 512 then TEXT_MEMO, NUM_MEMO, TEXT_MEMO_N = {}, {}, 0 end
  TEXT_MEMO[n], TEXT_MEMO_N = s, TEXT_MEMO_N + 1
  -- (n + 0: a -0 formats as "0", and must come back as 0, never as -0, which redis.call
  -- would send as "-0")
  if n % 1 == 0 and n > -9007199254740992 and n < 9007199254740992 then NUM_MEMO[s] = n + 0 end
  return s
end

-- A stored integer (a version, a revision, a time) or nil: a number that is whole and
-- exact (|n| < 2^53), never nil, "inf", "nan" or a fraction, and stored text must be
-- spelled as Redis writes an integer ("007", "5.0", "+5", " 5", "0x10", "1e3" are not):
-- what passes here, HINCRBY takes, so a counter that passed the checks never fails a
-- later HINCRBY halfway through a script (tests/faults/test_corruption_fuzz.py). The
-- spelling is checked by formatting the number back (itos: a memo lookup for numbers
-- formatted lately, as the revision and counters a write reads were by the write before),
-- ~1.5k instructions against ~3.3k for a pattern match; a text itos made lately is
-- taken from NUM_MEMO as it is (only texts are its keys, so a number s never matches).
local function stored_int(s)
  local n = NUM_MEMO[s]
  if n then return n end
  n = tonumber(s)
  if not n or n % 1 ~= 0 or n <= -9007199254740992 or n >= 9007199254740992 then return nil end
  if type(s) == "string" and itos(n) ~= s then return nil end
  return n
end

-- A stored number read where any number would do (namespace settings and counters):
-- nil or garbage is corrupt.
local function stored_num(s, key, what)
  local n = stored_int(s)
  if n == nil then corrupt(key, "bad " .. what .. ": " .. string.sub(tostring(s), 1, 40)) end
  return n
end

-- stored_int for a namespace setting or limit (a TTL, a quota, a retention): the same
-- text comes back call after call, so its number is kept (see int_memo). Not for
-- counters and revisions, which change on every write and would only churn the table.
local function stored_setting_int(s)
  local n = STORED_MEMO[s]
  if n then return n end
  n = stored_int(s)
  if n then
    if STORED_MEMO_N >= 512 then STORED_MEMO, STORED_MEMO_N = {}, 0 end
    STORED_MEMO[s], STORED_MEMO_N = n, STORED_MEMO_N + 1
  end
  return n
end

-- The same where a setting must be a number: nil or garbage is corrupt.
local function stored_setting(s, key, what)
  local n = stored_setting_int(s)
  if n == nil then corrupt(key, "bad " .. what .. ": " .. string.sub(tostring(s), 1, 40)) end
  return n
end

-- A read of a key the script may write later: the right type or absent, else corrupt.
-- redis.call would fail the script as well, but with a WRONGTYPE that names no key.
local function read_call(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == "table" and r.err then corrupt(key, "holds the wrong type for " .. cmd) end
  return r
end

-- Hash fields the script will HINCRBY must hold integers (or be absent): HINCRBY fails
-- on anything else, after the writes before it. Checked with the reads, before any write.
local function require_counters(key, ...)
  local fields = { ... }
  local values = read_call("HMGET", key, ...)
  for i = 1, #fields do
    if values[i] and not stored_int(values[i]) then
      corrupt(key, "counter " .. fields[i] .. " is not an integer")
    end
  end
end

-- A write's quota check (write.lua): the quota the namespace's counts would pass with
-- these new totals, as (kind, limit, current, requested), or nil. Updating an existing
-- key never counts against max_keys; bytes count by delta. (A library function, not a
-- closure the write makes on every call.)
local function quota_over(nk, nb, max_keys, max_bytes, n_keys, n_bytes, key_delta, byte_delta)
  if max_keys > 0 and key_delta > 0 and nk > max_keys then
    return "max_keys", max_keys, n_keys, n_keys + key_delta
  end
  if max_bytes > 0 and byte_delta > 0 and nb > max_bytes then
    return "max_bytes", max_bytes, n_bytes, n_bytes + byte_delta
  end
  return nil
end

-- A fenced write refused (decision 7): counted, and the reply to send.
local function fenced_reply(i, lock, token, latest, reason)
  require_counters(K_STATS, "fence_rejected") -- also its type (read_call)
  redis.call("HINCRBY", K_STATS, "fence_rejected", 1)
  return { "fenced", i, lock, token, latest, reason }
end

local function type_of(key)
  local t = redis.call("TYPE", key)
  if type(t) == "table" then t = t.ok end
  return t
end

-- Keys a script is about to write must be absent or of their kind: checked before the
-- first write, so a corrupt key fails the call with nothing changed (decision 2; Redis
-- does not roll back a script that fails halfway). Pairs {key, kind, key, kind, ...};
-- keys the script already read with read_call need no check (one TYPE per key here).
local function require_kinds(list)
  for i = 1, #list, 2 do
    local t = type_of(list[i])
    if t ~= "none" and t ~= list[i + 1] then
      corrupt(list[i], "holds a " .. tostring(t) .. ", not a " .. list[i + 1])
    end
  end
end

-- "" means "not given"; anything else must be a strict integer.
local function opt_int(s, what)
  if s == nil or s == "" then return nil end
  return int_arg(s, what)
end

-- A call's fixed integers packed in one argument, "<n1> <n2> ...": each argument a call
-- passes costs the server ~0.6-1.2k instructions (read from the request, made a Redis
-- and a Lua string, stored in ARGV), and these repeat from call to call (a client's
-- limits), so each distinct text is parsed once (int_arg's rules per number) and its
-- table kept, bounded like int_memo. The table is shared: callers only read it.
local FIELDS_MEMO, FIELDS_MEMO_N = {}, 0
local function int_fields(s, n, what)
  local t = FIELDS_MEMO[s]
  if t then return t end
  if type(s) ~= "string" or #s > 20 * n then error("swarm_memory: bad " .. what .. ": " .. tostring(s)) end
  -- n numbers joined by single spaces: no other space, no more and no fewer numbers
  if string.find(s, "^ ") or string.find(s, " $") or string.find(s, "  ", 1, true) then
    error("swarm_memory: bad " .. what .. ": " .. s)
  end
  t = {}
  for part in string.gmatch(s, "[^ ]+") do
    if #t == n then error("swarm_memory: bad " .. what .. ": " .. s) end
    t[#t + 1] = int_arg(part, what)
  end
  if #t ~= n then error("swarm_memory: bad " .. what .. ": " .. s) end
  if FIELDS_MEMO_N >= 256 then FIELDS_MEMO, FIELDS_MEMO_N = {}, 0 end
  FIELDS_MEMO[s], FIELDS_MEMO_N = t, FIELDS_MEMO_N + 1
  return t
end

-- The longest value a packed reply carries (put.lua's computed value, get.lua's stored
-- one; _ops/replies.py): packing copies the value into one new Lua string, which a
-- table reply does not, and the string stays in the Lua heap until it is collected; a
-- longer value goes out in the table, whose conversion (~4-9k instructions) is then the
-- smaller cost.
local PACKED_VALUE_MAX = 4096

-- A write item's head, "<op> <expected> <ttl_ms> <fmt>": one argument for four (see
-- int_fields). expected and ttl_ms are "" when not given; the format is last, whatever
-- it holds. Returns op, expected, ttl_ms (numbers or nil) and fmt.
-- Heads repeat from call to call ("P   json": most puts), so each distinct text is
-- matched once (~3.9k instructions a match, stop 34) and its parts kept, bounded like
-- int_fields (a head with an expected version is new for every version: at most 256 kept).
local HEAD_MEMO, HEAD_MEMO_N = {}, 0
local function item_head(s)
  local h = HEAD_MEMO[s]
  if h then return h[1], h[2], h[3], h[4] end
  local op, expected, ttl_ms, fmt = string.match(s, "^(%u) (%d*) (%d*) (.*)$")
  if not op then error("swarm_memory: bad write item head: " .. string.sub(tostring(s), 1, 40)) end
  expected, ttl_ms = opt_int(expected, "expected"), opt_int(ttl_ms, "ttl_ms")
  if HEAD_MEMO_N >= 256 then HEAD_MEMO, HEAD_MEMO_N = {}, 0 end
  HEAD_MEMO[s], HEAD_MEMO_N = { op, expected, ttl_ms, fmt }, HEAD_MEMO_N + 1
  return op, expected, ttl_ms, fmt
end

-- Server time in integer milliseconds (DESIGN.md decision 4: never agent clocks). One
-- TIME per call (NOW_TIME, reset by enter()): now_ms and now_us of one call agree, and
-- TIME costs as much as a small read.
local function server_time()
  local t = NOW_TIME
  if not t then
    t = redis.call("TIME")
    NOW_TIME = t
  end
  return t
end

-- The seconds of the last TIME converted, as its text and its number: the next calls in
-- the same second compare the text (one instruction: Lua strings are interned) instead
-- of converting it again (a strtod, ~0.6k instructions).
local SEC_TEXT, SEC_NUM = nil, 0

local function now_ms()
  local ms = NOW_MS
  if not ms then
    local t = server_time()
    -- (TIME's two replies are digits: "+ 0" converts them once; tonumber() twice.)
    local sec, us = SEC_NUM, t[2] + 0
    if t[1] ~= SEC_TEXT then
      sec = t[1] + 0
      SEC_TEXT, SEC_NUM = t[1], sec
    end
    ms = sec * 1000 + (us - us % 1000) / 1000 -- math.floor, without a library call
    NOW_MS, NOW_US = ms, sec * 1000000 + us
  end
  return ms
end

-- Microseconds (about 1.8e15 today: exact in a Lua double until the year 2255).
local function now_us()
  if not NOW_US then now_ms() end
  return NOW_US
end

-- Feed ids are "<revision>-<seq>" and XADD refuses an id at or below the stream's last
-- one (kept even when that entry was deleted): a foreign entry past the revision being
-- appended would fail the script after its other writes. Checked before the first
-- write, with the stream's type, by every script that appends events.
-- The last id a stream generated (kept when its entry is deleted), nil when absent.
local function last_stream_id(key)
  local info = redis.pcall("XINFO", "STREAM", key)
  if type(info) ~= "table" or info.err then -- no such key, or not a stream
    local t = type_of(key)
    if t ~= "none" then corrupt(key, "holds a " .. tostring(t) .. ", not a stream") end
    return nil
  end
  for i = 1, #info - 1, 2 do
    if info[i] == "last-generated-id" then return info[i + 1] end
  end
  corrupt(key, "has no last id")
end

local function require_feed_room(rev)
  local id = last_stream_id(K_EVENTS)
  if id then
    local last = stored_int(string.match(id, "^(%d+)%-%d+$"))
    if not last or last >= rev then
      corrupt(K_EVENTS, "holds id " .. id .. ", at or past revision " .. itos(rev))
    end
  end
end

-- XADD "*" fails only after the largest possible id: a stream (the audit log, an inbox)
-- a script appends to after other writes is checked for it first.
local function require_stream_room(key)
  if last_stream_id(key) == "18446744073709551615-18446744073709551615" then
    corrupt(key, "holds the largest possible id: it takes no more entries")
  end
end

-- The same for scripts that take the next revision with HINCRBY later.
local function require_next_revision_room()
  local rev = stored_num(read_call("HGET", K_META, "rev") or "0", K_META, "rev")
  require_feed_room(rev + 1)
  return rev
end

-- Length-prefixed packing of a flat list (netstrings): binary safe, no cjson involved.
-- "<len>:" for lengths below 1024, made once: a number in table.concat is a sprintf.
-- Under FCALL the table lives as long as the library; under EVALSHA, for one call.
local PACK_PREFIX = {}
local function pack_prefix(s)
  local n = #s
  local prefix = PACK_PREFIX[n]
  if not prefix then
    prefix = itos(n) .. ":"
    if n < 1024 then PACK_PREFIX[n] = prefix end
  end
  return prefix
end

-- Short lists (a doorbell, an op record, a history record: up to 32 parts) are joined by
-- chained `..`, four parts a step: one concatenation of up to eight strings costs a
-- fraction of filling a table and table.concat (a 10-part doorbell 22.6k -> ~6k
-- instructions). Longer ones go through one table and one table.concat, which copies
-- each part once (chained `..` over a long list would copy the growing text each step).
local function pack(list)
  local n, P = #list, PACK_PREFIX
  if n > 32 then
    local out, j = {}, 0
    for i = 1, n do
      local s = list[i]
      if type(s) == "number" then s = itos(s) end
      out[j + 1], out[j + 2] = P[#s] or pack_prefix(s), s
      j = j + 2
    end
    return table.concat(out)
  end
  local out, i = "", 1
  while i + 3 <= n do
    local a, b, c, d = list[i], list[i + 1], list[i + 2], list[i + 3]
    if type(a) == "number" then a = itos(a) end
    if type(b) == "number" then b = itos(b) end
    if type(c) == "number" then c = itos(c) end
    if type(d) == "number" then d = itos(d) end
    out = out .. (P[#a] or pack_prefix(a)) .. a .. (P[#b] or pack_prefix(b)) .. b
      .. (P[#c] or pack_prefix(c)) .. c .. (P[#d] or pack_prefix(d)) .. d
    i = i + 4
  end
  while i <= n do
    local a = list[i]
    if type(a) == "number" then a = itos(a) end
    out = out .. (P[#a] or pack_prefix(a)) .. a
    i = i + 1
  end
  return out
end

-- Inverse of pack(), bounded: every length is checked before use and at most `max`
-- parts are read, so a corrupt record (a negative or oversized length, a missing colon)
-- is an error naming `key`, never a loop. Each part advances past its colon: at most
-- #s / 2 rounds even without the cap.
local function unpack_list(s, key, max)
  local out, n, i, len = {}, 0, 1, #s
  while i <= len do
    if n >= max then corrupt(key, "record has more than " .. max .. " parts") end
    -- The length: 1 to 10 digits and a colon at i, read by one anchored match and used
    -- as a number by arithmetic (a plain find, a sub, a second find and tonumber cost
    -- ~1.5x as much a part: every library function call counts here).
    local digits, at = string.match(s, "^(%d+):()", i)
    if not digits or #digits > 10 then corrupt(key, "record has a malformed length at byte " .. i) end
    local last = at + digits - 1
    if last > len then corrupt(key, "record part runs past its end") end
    n = n + 1
    out[n] = string.sub(s, at, last)
    i = last + 1
  end
  return out
end

-- The namespace's state or nil if missing / being deleted.
-- state, default level, and the retention the namespace stores (audit records kept, the
-- dedupe window in ms): m[3] and m[4], nil for a namespace created before it was stored.
local function load_meta()
  local m = read_call("HMGET", K_META, "state", "dp", "am", "dw")
  if m[1] ~= "live" then return nil end
  return m
end

-- The namespace configuration a write needs, packed into one meta field, "cfg": these
-- fields' values joined by "," in this order ("" for an absent one), stored by ns.lua at
-- create and on every update beside the fields themselves (which info shows). A write
-- reads the 5 fields state, cfg, n, b, rev instead of 13, and parses a cfg text once per
-- library (the memo below: the same text comes back on every write), against ~26k
-- instructions for the 13-field read and the settings parsed one by one
-- (docs/performance.md). A namespace created before "cfg" (its next update stores it) is
-- read field by field.
local CFG_FIELDS = { "dp", "strat", "ttl", "mk", "mb", "hd", "rl", "em", "oq" }
local CFG_PATTERN = "^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)$"
local CFG_MEMO, CFG_MEMO_N = {}, 0

-- The configuration as a table (shared through the memo: never modify it), from the cfg
-- text, or from the fields when there is none. Settings that are not numbers, or a cfg
-- text of another shape, are corrupt.
local function namespace_cfg(text)
  local c = text and CFG_MEMO[text]
  if c then return c end
  local v
  if text then
    v = { string.match(text, CFG_PATTERN) }
    if #v ~= #CFG_FIELDS then corrupt(K_META, "bad cfg: " .. string.sub(text, 1, 60)) end
  else
    v = read_call("HMGET", K_META, unpack(CFG_FIELDS))
  end
  c = { dp = v[1], strat = v[2], rl = v[7] == "1", oq = v[9] }
  if c.dp == "" then c.dp = nil end
  c.ttl = stored_setting(v[3], K_META, "ttl")
  c.mk = stored_setting(v[4], K_META, "max_keys")
  c.mb = stored_setting(v[5], K_META, "max_bytes")
  c.hd = stored_setting(v[6], K_META, "history")
  c.em = stored_setting_int((v[8] == nil or v[8] == "") and "0" or v[8]) or 0 -- lenient, as before
  if text then
    if CFG_MEMO_N >= 512 then CFG_MEMO, CFG_MEMO_N = {}, 0 end
    CFG_MEMO[text], CFG_MEMO_N = c, CFG_MEMO_N + 1
  end
  return c
end

-- Only the state and the default level, or nil (reads and locks: every field an HMGET
-- returns costs the script a Lua string; the audit limit is read when a record is added).
local function load_access()
  local m = read_call("HMGET", K_META, "state", "dp")
  if m[1] ~= "live" then return nil end
  return m
end

-- A stored retention limit when the namespace has one, else the caller's (older
-- namespaces): the namespace's config, not whichever client writes last.
local function stored_limit(value, default)
  local n = value and stored_setting_int(value)
  if n and n > 0 then return n end
  return default
end

-- The marker: while a namespace is live, its ACL hash's field "#" holds the default
-- level (no agent name starts with "#": keys.py). ns.lua writes it at create and with
-- every update, grant and revoke, and removes it when a delete starts. A read then takes
-- the caller's level and the default from one HMGET of the ACL hash instead of the meta
-- state and default (an HMGET) and the caller's level (an HGET): a get 77k -> ~68k
-- instructions (docs/performance.md). A namespace without it (created by an earlier
-- version and not changed since, being deleted, or absent) is read as before.
local ACL_MARK = "#"

-- A read's access: nil when the namespace is not live, else the caller's rank (see
-- LEVEL_RANK; an unknown level ranks 0). marker_only: a caller without the meta name
-- (get.lua) gets false, not meta's answer, where the ACL hash has no marker.
-- (redis.pcall and the reply's err field directly: HMGET answers a table either way, and
-- read_call's varargs and type() cost ~1k.)
local function read_access(agent, marker_only)
  local a = redis.pcall("HMGET", K_ACL, agent, ACL_MARK)
  if a.err then corrupt(K_ACL, "holds the wrong type for HMGET") end
  local default_level = a[2]
  if not default_level then
    if marker_only then return false end
    local m = load_access()
    if not m then return nil end
    default_level = m[2]
  end
  return LEVEL_RANK[a[1] or default_level] or 0
end

local function level_of(agent, default_level)
  local lv = redis.pcall("HGET", K_ACL, agent) -- (read_call's check, inline: no varargs)
  if not lv then
    lv = default_level
  elseif type(lv) == "table" then
    corrupt(K_ACL, "holds the wrong type for HGET")
  end
  return LEVEL_RANK[lv] or 0
end

local function audit(maxlen, agent, action, key, op_id, outcome, rev)
  redis.call("XADD", K_AUDIT, "MAXLEN", "~", maxlen, "*",
    "a", agent, "act", action, "k", key or "", "op", op_id or "", "out", outcome, "r", rev or 0)
end

-- A denial of `agent` (its rank `have`): counted and audited, and the reply to send.
-- The denial is counted and audited with pcall: a read run without writes (FCALL_RO /
-- EVALSHA_RO, see ScriptCall.readonly) cannot write, and the driver runs a denied read
-- again with writes so that it is recorded wherever the calling user may write
-- (docs/guarantees.md). audit_maxlen nil: the namespace's stored limit ("am"), else
-- default_maxlen.
local function denial(agent, have, action, key, audit_maxlen, default_maxlen)
  if audit_maxlen == nil then
    audit_maxlen = stored_limit(read_call("HGET", K_META, "am"), default_maxlen)
  end
  require_stream_room(K_AUDIT)
  require_counters(K_STATS, "denied") -- also its type (read_call)
  local counted = redis.pcall("HINCRBY", K_STATS, "denied", 1)
  if not (type(counted) == "table" and counted.err) then
    -- "rv": the revision the denial came after, which orders it among the writes that the
    -- audit log reads from the feed (events.lua); a denial itself has no revision (r = 0).
    local rv = redis.pcall("HGET", K_META, "rev")
    if type(rv) ~= "string" then rv = "" end
    redis.call("XADD", K_AUDIT, "MAXLEN", "~", audit_maxlen, "*", "a", agent, "act", action,
      "k", key or "", "op", "", "out", "denied", "r", 0, "rv", rv)
  end
  return { "denied", RANK_NAME[have] }
end

-- The reply refusing a call of `agent` that needs the rank `needed` (nons, or a denial
-- counted and audited as `action` on `key`), or nil when the call may go on: the ACL
-- hash's marker gives the level and the namespace's state in one HMGET (read_access).
local function access_refused(agent, needed, action, key, default_maxlen)
  local have = read_access(agent)
  if not have then return { "nons" } end
  if have < needed then return denial(agent, have, action, key, nil, default_maxlen) end
  return nil
end

-- Permission gate shared by every script. Returns nil when allowed, else the reply to send.
local function deny_reply(agent, default_level, needed, action, key, audit_maxlen, default_maxlen)
  local have = level_of(agent, default_level)
  if have >= needed then return nil end
  return denial(agent, have, action, key, audit_maxlen, default_maxlen)
end

-- An entry is a hash of "v" (the value), "m" (its metadata, packed: "<ver> <cr> <mr> <ct>
-- <mt> <x> <by> <f>", six numbers as digits, the writer's agent name, which holds no
-- space, and the value's format, last, which may) and, for an ephemeral write, "eo". One
-- field for the eight: an HMGET or HSET costs ~2k instructions per field, an entry's
-- numbers checked one by one ~3k each, and every field name costs memory
-- (docs/performance.md). Entries stored before it have the eight as fields of their own
-- (ENTRY_LEGACY); they are read as they are and rewritten packed by their next write.
-- Since stop 24 three parts may be empty, each meaning its most common value: <mr> the
-- same as <cr> (an entry's first version), <mt> the same as <ct>, <f> "json". A small
-- entry's hash then fits a smaller allocation: 248 -> 216 bytes for the benchmark's
-- 62-byte value (docs/performance.md, "Memory per entry, stop 24"). Texts with all eight
-- parts written out, as stored before, read the same.
local ENTRY_PACKED = "^(%d+) (%d+) (%d*) (%d+) (%d*) (%d+) (%S+) (.*)$"
local ENTRY_LEGACY = { "f", "ver", "cr", "mr", "ct", "mt", "by", "x" }

-- The entry table of a packed "m" (and its value and lease owner): each number digits
-- only and below 2^53, the version at least 1; anything else is corrupt, never read as
-- absent (an index would still list it) nor passed on half-parsed.
-- The version and the expiry, which scripts compute with, are numbers; the create and
-- mod revisions and times stay the stored digits: scripts only pass them on (into
-- replies, records and "m" again), and a tonumber() of a 13-digit time is a strtod of
-- ~2-3k instructions (callgrind: ~22 conversions a put before this).
local function unpack_entry(key, m, v, eo)
  local ver, cr, mr, ct, mt, x, by, f = string.match(m, ENTRY_PACKED)
  if not f or not v or #ver > 15 or #cr > 15 or #mr > 15 or #ct > 15 or #mt > 15 or #x > 15 then
    corrupt(key, "malformed entry")
  end
  if mr == "" then mr = cr end -- (the shorthands entry_meta writes)
  if mt == "" then mt = ct end
  if f == "" then f = "json" end
  -- (digits, matched above: "+ 0" converts them with one strtod; tonumber() takes two)
  local e = { v = v, f = f, by = by, ver = ver + 0, cr = cr, mr = mr, ct = ct, mt = mt,
    x = x + 0, eo = eo or nil, key = key }
  if e.ver < 1 then corrupt(key, "malformed entry") end
  return e
end

-- The same from the fields of an entry stored before "m" (no "m"), or nil when absent.
-- A hash without a version, or with numbers that are not strict integers, is corrupt.
-- (Called where "m" is missing but the hash has other fields, or may: its reads are
-- for entries of that older layout, never for an absent key on the common path.)
local function read_legacy_entry(key)
  local h = read_call("HMGET", key, "v", "f", "ver", "cr", "mr", "ct", "mt", "by", "x", "eo")
  if not h[3] then
    if h[1] or h[2] or h[4] or h[5] or h[7] or h[9] or redis.call("EXISTS", key) == 1 then
      corrupt(key, "entry without a version")
    end
    return nil
  end
  -- eo: the agent whose lease this entry is tied to (ephemeral writes), or nil.
  -- (cr, mr, ct, mt as their text, like unpack_entry's, once stored_int passed it.)
  local e = { v = h[1], f = h[2], ver = stored_int(h[3]), cr = stored_int(h[4]) and h[4],
    mr = stored_int(h[5]) and h[5], ct = stored_int(h[6]) and h[6], mt = stored_int(h[7]) and h[7],
    by = h[8], x = stored_int(h[9]), eo = h[10] or nil, key = key, legacy = true }
  if not (e.v and e.f and e.by and e.ver and e.cr and e.mr and e.ct and e.mt and e.x) or e.ver < 1 then
    corrupt(key, "malformed entry")
  end
  return e
end

-- Current entry (as a table) or nil; `expired` is true when present but past its expiry
-- (the entry is then the third value). e.legacy: stored field by field (see above).
local function read_entry(key, now)
  -- (read_call's check, inline: an HMGET answers a table either way; no varargs call)
  local h = redis.pcall("HMGET", key, "m", "v", "eo")
  if h.err then corrupt(key, "holds the wrong type for HMGET") end
  local e
  if h[1] then
    e = unpack_entry(key, h[1], h[2], h[3])
  elseif h[2] or h[3] then
    e = read_legacy_entry(key) -- (nil: corrupt, raised there)
  elseif redis.call("EXISTS", key) == 1 then
    corrupt(key, "entry without a version") -- neither layout's fields
  else
    return nil, false -- absent: no second read (the common case of a new key)
  end
  if e.x > 0 and e.x <= now then return nil, true, e end
  return e, false
end

-- The "m" text of an entry with these fields, every number as its text (the revisions
-- and times as unpack_entry keeps them; the version and expiry as itos gives them: a
-- caller that also sends them elsewhere formats them once), with ENTRY_PACKED's
-- shorthands: an empty part for a mod revision or time equal to the create one, and for
-- the "json" format.
local function entry_meta(ver_s, cr_s, mr_s, ct_s, mt_s, x_s, by, f)
  if mr_s == cr_s then mr_s = "" end
  if mt_s == ct_s then mt_s = "" end
  if f == "json" then f = "" end
  return ver_s .. " " .. cr_s .. " " .. mr_s .. " " .. ct_s .. " " .. mt_s .. " " .. x_s .. " " .. by .. " " .. f
end

-- The "m" text of an entry as read_entry gives it (a legacy one's too: sent packed).
local function entry_text(e)
  return entry_meta(itos(e.ver), e.cr, e.mr, e.ct, e.mt, itos(e.x), e.by, e.f)
end

-- After an entry's "m" was written: an entry stored field by field loses those fields.
local function drop_legacy_fields(e)
  if e and e.legacy then redis.call("HDEL", e.key, unpack(ENTRY_LEGACY)) end
end

-- An entry's version (a number), or nil when it has none: for the events of entries a
-- script removes without reading them whole (evictions, purges).
local function stored_version(key)
  local h = read_call("HMGET", key, "m", "ver")
  if h[1] then
    local ver = string.match(h[1], "^(%d+) ")
    if not ver or #ver > 15 then corrupt(key, "malformed entry") end
    return ver
  end
  return h[2] or nil
end

local function entry_reply(e)
  if not e then return { "" } end
  return { e.ver, e.cr, e.mr, e.ct, e.mt, e.x, e.by, e.f, e.v }
end

-- A write item's compare and strategy checks (write.lua, put.lua): the reply refusing
-- item i (op, expected version or nil, the current entry or nil) in a namespace of this
-- strategy, or nil. A failed compare sends the current entry back, as entry_reply gives
-- it; a blind put, set or delete where the strategy wants a version is refused; so is a
-- put over an existing entry under first-wins.
local function compare_refused(i, op, expected, cur, strategy)
  local conflict
  if expected ~= nil then
    conflict = (expected == 0 and cur) or (expected > 0 and (not cur or cur.ver ~= expected))
  elseif op == "S" or ((op == "P" or op == "D") and (strategy == "version" or strategy == "custom")) then
    return { "version_required", i, strategy }
  else
    conflict = op == "P" and strategy == "first-wins" and cur
  end
  if not conflict then return nil end
  local r = { "conflict", i }
  for _, x in ipairs(entry_reply(cur)) do r[#r + 1] = x end
  return r
end

-- Work for the sweeper: 1 = entries past their expiry, 2 = agent leases that ran out
-- (their ephemeral entries and locks must go), 3 = both. now: the call's time in ms, or
-- nil to read the clock only when an index has a member to compare (a read of entries
-- without expiry in a namespace without leases then costs no TIME: ~12k instructions).
-- (Arguments to redis.call as strings: a Lua number costs a "%.17g" conversion each.)
-- sweep_due_read: the same for a caller that found one of the indexes there (its own
-- EXISTS, inline: a get's, a write's), without a second EXISTS.
local function sweep_due_read(now)
  local due = 0
  local first = read_call("ZRANGE", K_EXP, "0", "0", "WITHSCORES")
  if first[2] and tonumber(first[2]) <= (now or now_ms()) then due = 1 end
  local lease = read_call("ZRANGE", K_LEASE, "0", "0", "WITHSCORES")
  if lease[2] and tonumber(lease[2]) <= (now or now_ms()) then due = due + 2 end
  return due
end

local function sweep_due(now)
  -- Neither index exists (no entry with an expiry, no lease here: the common case): one
  -- EXISTS answers for both, ~3.2k instructions against ~9k for the two reads.
  -- (An absent key holds no wrong type: a script's later writes to them need no check.)
  if redis.call("EXISTS", K_EXP, K_LEASE) == 0 then return 0 end
  return sweep_due_read(now)
end

-- What every data write does first (write.lua, put.lua): one read of the namespace hash
-- for everything every write needs (state, configuration packed in "cfg", see
-- namespace_cfg, counters and revision; what only some calls need is read when they need
-- it: the audit limit "am" when denied, the dedupe window "dw" when purging), the
-- caller's permission, the clock, and the replay lookup: a replayed op id returns its
-- first outcome instead of applying twice (decision 6; the record is the compact one a
-- write stores last, or an older format, or another script's: the client decodes it and
-- compares its request digest). Returns the reply that ends the call (nons, a denial, a
-- replay), or nil and the meta fields, the configuration, the time, the key and byte
-- counts and the revision.
-- (redis.pcall and its err field, as read_call does, without a varargs call and type():
-- an HMGET answers a table either way)
local function write_gate(agent, op_id, action, key, audit_maxlen)
  local meta = redis.pcall("HMGET", K_META, "state", "cfg", "n", "b", "rev")
  if meta.err then corrupt(K_META, "holds the wrong type for HMGET") end
  if meta[1] ~= "live" then return { "nons" } end
  local cfg = namespace_cfg(meta[2])
  local denied = deny_reply(agent, cfg.dp, LEVEL_RANK.write, action, key, nil, audit_maxlen)
  if denied then return denied end
  local now = now_ms()
  local previous = redis.pcall("HGET", K_OPS, op_id) -- (read_call's check, inline: see meta)
  if previous then
    if type(previous) == "table" then corrupt(K_OPS, "holds the wrong type for HGET") end
    return { "dup", previous, sweep_due(now) }
  end
  -- (stored_num's memo read here, not through two calls each: the counts and revision are
  -- the texts the write before formatted; see stored_int)
  local N = NUM_MEMO
  return nil, cfg, now, N[meta[3]] or stored_num(meta[3], K_META, "n"),
    N[meta[4]] or stored_num(meta[4], K_META, "b"), N[meta[5]] or stored_num(meta[5] or "0", K_META, "rev")
end

-- The op record of a data write (decision 6), compact (swarm_memory._ops.parse_op_record):
-- its header "w1 <digest|-> <rev> <now> <n_items> <n_evicted> <n_values>|" (counts: those
-- three numbers as text, "1 0 0" for a put), then per item its status and numbers
-- ("|"-joined, a "|" after the last), then pack() of the values and evicted names, if
-- any. By concatenation of texts itos has: string.format runs a sprintf per "%d" (~0.7k
-- each).
local function record_head(digest, rev_s, now_s, counts)
  return "w1 " .. (digest == "" and "-" or digest) .. " " .. rev_s .. " " .. now_s .. " " .. counts .. "|"
end

-- A written item's part of the op record: "w <ver> <cr> <ct> <x> <size>", each as its
-- text (its mod revision and time are the record header's; see entry_meta).
local function written_record(ver_s, cr, ct, x_s, size_s)
  return "w " .. ver_s .. " " .. cr .. " " .. ct .. " " .. x_s .. " " .. size_s
end

-- The op record's values part for one item's value (an incr's or a merge's result, the
-- common case): pack({i, value, fmt})'s text in one concatenation (see publish_events).
local function one_value_packed(i_s, v, f)
  local P = PACK_PREFIX
  return (P[#i_s] or pack_prefix(i_s)) .. i_s .. (P[#v] or pack_prefix(v)) .. v
    .. (P[#f] or pack_prefix(f)) .. f
end

-- An incr's new value ("I" items, write.lua and put.lua): the stored counter (absent: 0)
-- plus the amount, as text; nil when the stored value is not a JSON integer of at most
-- 17 characters, or either number is past 2^53 - 1 (the caller answers "not_integer").
local MAX_EXACT = 9007199254740991
-- A stored counter the incr before formatted is in itos's NUM_MEMO: such a text is an
-- integer as Redis and JSON spell it (digits, a "-" for a negative one, below 2^53), so
-- it is taken from there without the pattern and the conversions (~3k instructions an
-- incr); any other text is checked and converted as before.
local function incremented(cur, amount)
  local base = 0
  if cur then
    if cur.f ~= "json" then return nil end
    base = NUM_MEMO[cur.v]
    if not base then
      -- (the length first: the pattern would scan a stored value of any size)
      if #cur.v > 17 or not string.match(cur.v, "^%-?%d+$") then return nil end
      base = tonumber(cur.v)
    end
  end
  local sum = base + int_arg(amount, "amount")
  if base > MAX_EXACT or base < -MAX_EXACT or sum > MAX_EXACT or sum < -MAX_EXACT then return nil end
  return itos(sum)
end

-- The op records' purge index, K_OPST: which op ids to drop from K_OPS once the dedupe
-- window has passed. A list of "<ms> <op id>", appended in the order recorded, so the
-- purge reads the oldest at its head. Namespaces from before stop 22 hold a sorted set
-- (op id -> ms) there: a key that is one stays one, read and written as before (a write
-- finds out by its RPUSH being refused). A list costs a write an RPUSH (~5k
-- instructions) where the sorted set's ZADD cost 15-23k (its skiplist holds every op id
-- of the window), and ~40 bytes an op id instead of ~100 (docs/performance.md).
-- A list is in time order as long as the server's clock does not step back (a failover
-- to a replica with a clock behind): then some records wait behind a newer one for
-- their purge, never the other way round. An element that does not parse (written by
-- something else) names no record: the purge drops it from the index and goes on.
--
-- The ranges a purge reads, one after the other while every element read was stale:
-- the head alone first (in a namespace younger than its dedupe window, or written in
-- bursts, the head is inside the window: one element read, not 8), then the ~8 a purge
-- every 8th revision usually finds, then the rest of at most 64.
local OPS_PURGE_READS = { 0, 0, 1, 8, 9, 63 }
-- The longest element this library writes: 15 digits, a space and an op id of at most
-- 128 characters (_ops/args.py, MAX_OP_ID) of at most 4 bytes each. Longer is foreign.
local OPS_ELEMENT_MAX = 16 + 4 * 128

-- Drops the op records past the window whose ids the list's head holds, and those
-- elements. cut: ms; records from it on are kept.
local function purge_op_list(cut)
  local ids, n, inside = {}, 0, false
  for r = 1, #OPS_PURGE_READS, 2 do
    local from, to = OPS_PURGE_READS[r], OPS_PURGE_READS[r + 1]
    local head = redis.call("LRANGE", K_OPST, from, to)
    for i = 1, #head do
      local s = head[i]
      local ms, id
      if #s <= OPS_ELEMENT_MAX then ms, id = string.match(s, "^(%d+) (.+)$") end
      if ms and #ms <= 15 then
        if tonumber(ms) >= cut then inside = true break end
        ids[#ids + 1] = id
      end
      n = n + 1
    end
    if inside or #head <= to - from then break end -- (a short read: the list ended)
  end
  if n > 0 then
    if ids[1] then redis.call("HDEL", K_OPS, unpack(ids)) end
    redis.call("LTRIM", K_OPST, n, -1)
  end
end

-- A write's op record (decision 6), after the dedupe window's purge, amortized: every
-- 8th revision drops up to 64 records past the window (8x the rate writes add them)
-- instead of a range query on every write. Records from `now` minus the window on are
-- kept (an exclusive bound), so even a zero window never purges the record of this call,
-- whether its index entry is added before the purge or after. `now`: ms, a number.
-- listed: K_OPST is a list (or absent), not a sorted set (op_index_listed, index_op).
local function purge_ops(rev, now, dedupe_ms, listed)
  if rev % 8 == 0 then
    if listed then return purge_op_list(now - dedupe_ms) end
    local stale = read_call("ZRANGEBYSCORE", K_OPST, "-inf", "(" .. itos(now - dedupe_ms), "LIMIT", 0, 64)
    if #stale > 0 then
      redis.call("HDEL", K_OPS, unpack(stale))
      redis.call("ZREM", K_OPST, unpack(stale))
    end
  end
end

-- Whether K_OPST is a list or absent (true) or a sorted set (false); any other type is
-- CorruptData. For the scripts that check their keys' types before writing (one TYPE).
local function op_index_listed()
  local t = type_of(K_OPST)
  if t == "zset" then return false end
  if t ~= "none" and t ~= "list" then corrupt(K_OPST, "holds a " .. tostring(t) .. ", not a list") end
  return true
end

-- The op id into its records' purge index as a script's first, refusable write (write
-- and lock release), without a TYPE first: an RPUSH, or where it is refused, the
-- sorted set of an older namespace; refused both ways (K_OPST neither a list nor a
-- sorted set), nothing is written and the call fails as CorruptData. Returns how to
-- undo it (unindex_op): "l" (pushed onto the list), "z" (added to the sorted set), or
-- false: the sorted set held this op id already (its record lost: corrupt data) and
-- keeps its entry, so the undo removes only what this call added (the corruption fuzz
-- found an undo removing the entry it had found), and op_indexed brings that entry's
-- time up to date once nothing can be refused any more.
local function index_op(op_id, now_s)
  local pushed = redis.pcall("RPUSH", K_OPST, now_s .. " " .. op_id)
  if type(pushed) == "number" then return "l" end
  local added = redis.pcall("ZADD", K_OPST, "NX", now_s, op_id)
  if type(added) == "table" then corrupt(K_OPST, "holds the wrong type for RPUSH or ZADD") end
  return added == 1 and "z"
end

-- Undoes index_op (the element this call pushed is the list's last: nothing else ran).
local function unindex_op(op_id, indexed)
  if indexed == "l" then
    redis.call("RPOP", K_OPST)
  elseif indexed then
    redis.call("ZREM", K_OPST, op_id)
  end
end

local function op_indexed(op_id, now_s, indexed)
  if indexed == false then redis.call("ZADD", K_OPST, now_s, op_id) end
end

-- listed: op_index_listed()'s answer, taken before the script's first write.
local function record_op(op_id, record, rev, now, dedupe_ms, listed)
  purge_ops(rev, now, dedupe_ms, listed)
  redis.call("HSET", K_OPS, op_id, record)
  if listed then
    redis.call("RPUSH", K_OPST, itos(now) .. " " .. op_id)
  else
    redis.call("ZADD", K_OPST, now, op_id)
  end
end

-- A write's replaced version into the entry's history hash (write.lua, put.lua): "m<ver>"
-- its metadata, packed, and "v<ver>" its value; the version `depth` back is dropped.
local function keep_history(hkey, cur, depth)
  redis.call("HSET", hkey, "m" .. cur.ver, pack({ cur.cr, cur.mr, cur.ct, cur.mt, cur.x, cur.by, cur.f }),
    "v" .. cur.ver, cur.v)
  local gone = cur.ver - depth
  if gone >= 1 then redis.call("HDEL", hkey, "m" .. gone, "v" .. gone) end
end

-- Ephemeral bookkeeping: members of K_EPH name what an agent's lease holds.
local function eph_member(agent, kind, name)
  return agent .. "\0" .. kind .. name
end

-- A lock hold's lease tie, per hold since stop 39: "<agent>\0l<lock>\0<token>" (no two
-- holds of a namespace share a token, and no lock name holds a NUL: keys.key_arg). The
-- tie before it, "<agent>\0l<lock>" (eph_member(agent, "l", lock)), stood for every hold
-- of the agent on that lock; an older client still makes it, so the reaper still reads
-- it that way (sparing a hold this version took without a lease: its owner id ends
-- ":n", _ops/coord.py UNLEASED), and every rewrite that leaves the agent no hold of the
-- lock drops it too (untie_lapsed, prune_locks, lock.lua's force) (docs/guarantees.md, 17).
local function lock_tie(agent, name, token_s)
  return agent .. "\0l" .. name .. "\0" .. token_s
end

-- Remove one entry from every index and adjust the counters. Returns its size.
-- order: false when the caller knows the namespace keeps no eviction-order index (a
-- write outside evict-oldest, which checks K_LRU's type only where it keeps one).
local function drop_entry(name, ekey, hkey, size, order)
  local owner = redis.call("HGET", ekey, "eo")
  if owner then redis.call("ZREM", K_EPH, eph_member(owner, "k", name)) end
  redis.call("DEL", ekey, hkey)
  redis.call("ZREM", K_IDX, name)
  if order ~= false then redis.call("ZREM", K_LRU, name) end
  redis.call("ZREM", K_EXP, name)
  redis.call("HINCRBY", K_META, "n", -1)
  -- 0 - size, not -size: -0 goes out as "-0", which HINCRBY refuses (an empty value).
  redis.call("HINCRBY", K_META, "b", 0 - size)
end

-- Events of one call are queued, then appended together by publish_events: stream ids
-- are "<revision>-<seq>" (so a revision is also a resume cursor) and every entry carries
-- n, the number of events of its revision, so a reader knows where a revision ends.
-- call: the action of the call that wrote it, when its type does not say it (the audit
-- log's view of a write; see write.lua), else nil.
local function event(etype, key, ver, value, fmt, call)
  PENDING_EVENTS[#PENDING_EVENTS + 1] = { etype, key or "", ver or 0, value, fmt, call }
end

local function events_maxlen(default)
  local em = stored_int(redis.call("HGET", K_META, "em") or "0")
  if em and em > 0 then return em end
  return default
end

-- Append the queued events, then ring the doorbell (SPUBLISH: sharded pub/sub on
-- Cluster, plain on one server). The doorbell is only a hint; readers never rely on it.
-- known_maxlen: the namespace's "em" field when the caller already read it (saves a call).
-- guarded: this is the script's first write, so a refused first XADD (not a stream, or
-- an id past this revision there) is CorruptData with nothing written; or a function
-- that undoes the writes the caller made before, called before the error is raised; or
-- "refusable": the refusal returns false, and the caller undoes and raises (write.lua).
-- ot, ok, ov, od, of, oc: a call's one event, event()'s six parts (as it stores them)
-- given here instead of queued (put.lua: no table, ~3k instructions a put less than a
-- queue of one), or nil (ot) for the queue.
local function publish_events(default_maxlen, rev, agent, now, known_maxlen, guarded, ot, ok, ov, od, of, oc)
  local n = ot and 1 or #PENDING_EVENTS
  if n == 0 then return end
  local maxlen = default_maxlen
  if known_maxlen == nil then
    maxlen = events_maxlen(default_maxlen)
  elseif known_maxlen > 0 then
    maxlen = known_maxlen
  end
  -- The doorbell carries the events too, so an up-to-date watcher needs no read; one
  -- that is behind (or sees a permission change) reads the stream as usual. Numbers used
  -- more than once become text once (each number redis.call gets is a "%.17g").
  -- (itos's memo read here, not through a call: the caller formatted rev and now, and a
  -- call costs ~0.5k instructions more than the lookup; see itos)
  local M = TEXT_MEMO
  local rev_s, n_s, now_s = M[rev] or itos(rev), M[n] or itos(n), M[now] or itos(now)
  local maxlen_s = M[maxlen] or itos(maxlen)
  -- The doorbell is pack({rev, n, (type, key, ver, value, fmt, has_value) per event,
  -- agent, ms}). A call with one event (the common case) builds its text in one
  -- concatenation instead of a table and pack(): ~13k instructions less a put
  -- (docs/performance.md).
  local bell = n > 1 and { rev_s, n_s } or nil
  local t1, k1, v1, d1, f1, h1
  -- The feed is trimmed (MAXLEN ~, approximate as Redis's "~" is) by one XADD of a call,
  -- its last: a call with one event on every 16th revision, or where the bound is small
  -- (under 1024: trimmed on every write), so a long feed may hold up to 15 revisions'
  -- events more than its bound for a while. An XADD with MAXLEN cost a put ~3.7k
  -- instructions more than one without (docs/performance.md).
  local trim_seq = (n > 1 or maxlen < 1024 or rev % 16 == 0) and n or 0
  for seq = 1, n do -- (a numeric for: ipairs costs a library call and one per step)
    local et, ek, ver, d, ef, ec = ot, ok, ov, od, of, oc
    if not ot then
      local e = PENDING_EVENTS[seq]
      et, ek, ver, d, ef, ec = e[1], e[2], e[3], e[4], e[5], e[6]
    end
    if type(ver) == "number" then ver = M[ver] or itos(ver) end
    local id = rev_s .. (seq == 1 and "-0" or "-" .. itos(seq - 1))
    if bell then
      local b = #bell
      bell[b + 1], bell[b + 2], bell[b + 3] = et, ek, ver
      bell[b + 4], bell[b + 5], bell[b + 6] = d or "", ef or "", d and "1" or "0"
    else
      t1, k1, v1, d1, f1, h1 = et, ek, ver, d or "", ef or "", d and "1" or "0"
    end
    local xadd = (guarded and seq == 1) and redis.pcall or redis.call
    local added
    -- A value carried in the "json" format is stored without its "f" field (readers take
    -- a missing "f" as "json"): 9.2 bytes less per event with the benchmark's 62-byte
    -- value (docs/performance.md, "Memory per entry, stop 24"). A carried value in
    -- another format (a codec's own; compressed values are larger than any carried one)
    -- takes the last branch, its arguments built in a table.
    if d and ef ~= "json" then
      local args = { "XADD", K_EVENTS }
      if seq == trim_seq then args[3], args[4], args[5] = "MAXLEN", "~", maxlen_s end
      local a = #args
      args[a + 1], args[a + 2], args[a + 3], args[a + 4], args[a + 5] = id, "t", et, "k", ek
      args[a + 6], args[a + 7], args[a + 8], args[a + 9], args[a + 10] = "v", ver, "a", agent, "ms"
      args[a + 11], args[a + 12], args[a + 13] = now_s, "n", n_s
      if ec then args[a + 14], args[a + 15] = "c", ec end
      a = #args
      args[a + 1], args[a + 2], args[a + 3], args[a + 4] = "d", d, "f", ef
      added = xadd(unpack(args))
    elseif seq == trim_seq then
      if ec and d then
        added = xadd("XADD", K_EVENTS, "MAXLEN", "~", maxlen_s, id, "t", et, "k", ek, "v", ver,
          "a", agent, "ms", now_s, "n", n_s, "c", ec, "d", d)
      elseif ec then
        added = xadd("XADD", K_EVENTS, "MAXLEN", "~", maxlen_s, id, "t", et, "k", ek, "v", ver,
          "a", agent, "ms", now_s, "n", n_s, "c", ec)
      elseif d then
        added = xadd("XADD", K_EVENTS, "MAXLEN", "~", maxlen_s, id,
          "t", et, "k", ek, "v", ver, "a", agent, "ms", now_s, "n", n_s, "d", d)
      else
        added = xadd("XADD", K_EVENTS, "MAXLEN", "~", maxlen_s, id,
          "t", et, "k", ek, "v", ver, "a", agent, "ms", now_s, "n", n_s)
      end
    elseif ec and d then
      added = xadd("XADD", K_EVENTS, id, "t", et, "k", ek, "v", ver,
        "a", agent, "ms", now_s, "n", n_s, "c", ec, "d", d)
    elseif ec then
      added = xadd("XADD", K_EVENTS, id, "t", et, "k", ek, "v", ver,
        "a", agent, "ms", now_s, "n", n_s, "c", ec)
    elseif d then
      added = xadd("XADD", K_EVENTS, id,
        "t", et, "k", ek, "v", ver, "a", agent, "ms", now_s, "n", n_s, "d", d)
    else
      added = xadd("XADD", K_EVENTS, id, "t", et, "k", ek, "v", ver, "a", agent, "ms", now_s, "n", n_s)
    end
    if type(added) == "table" and added.err then
      if guarded == "refusable" then return false end
      if type(guarded) == "function" then guarded() end -- undoes the caller's first writes
      require_feed_room(rev) -- names the reason: the key's type, or an id past rev
      corrupt(K_EVENTS, "refuses revision " .. itos(rev))
    end
  end
  -- (emptied in place: a new table every call cost ~1k instructions with its collection)
  if not ot then for i = n, 1, -1 do PENDING_EVENTS[i] = nil end end
  if not bell then
    local P = PACK_PREFIX
    redis.call("SPUBLISH", K_BELL, (P[#rev_s] or pack_prefix(rev_s)) .. rev_s .. "1:1"
      .. (P[#t1] or pack_prefix(t1)) .. t1 .. (P[#k1] or pack_prefix(k1)) .. k1
      .. (P[#v1] or pack_prefix(v1)) .. v1 .. (P[#d1] or pack_prefix(d1)) .. d1
      .. (P[#f1] or pack_prefix(f1)) .. f1 .. "1:" .. h1
      .. (P[#agent] or pack_prefix(agent)) .. agent .. (P[#now_s] or pack_prefix(now_s)) .. now_s)
  elseif n <= 64 then
    bell[#bell + 1] = agent
    bell[#bell + 1] = now_s
    redis.call("SPUBLISH", K_BELL, pack(bell))
  else
    redis.call("SPUBLISH", K_BELL, rev_s) -- big batches: ring only; watchers read the stream
  end
end

-- A data write's bookkeeping (write.lua, put.lua), once its events are queued and before
-- its data is written. First the three writes that can still be refused, each writing
-- nothing when it is: the op id into the op records' purge index (RPUSH, or ZADD where
-- the index is an older namespace's sorted set: see index_op), the call's stats counter
-- (HINCRBY: a hash, the field an integer) and the events (XADD: a stream, no id past this
-- revision). Refused, the ones before it are undone and the call fails as CorruptData
-- with nothing changed (DESIGN.md decision 2). Checking the first two by reading them (a
-- TYPE, an HMGET) cost ~15k instructions per write. The amortized purge of records past
-- the dedupe window comes after them (a refused call must not have purged either: the
-- corruption fuzz, seed 3). The caller writes its op record (HSET K_OPS) last: its purge
-- index has it already.
-- (ot ... oc: the call's one event, given as publish_events takes it, or nil: queued)
local function commit_write(op_id, now_s, action, stream_maxlen, rev, agent, now, events_cap, dedupe_ms,
                            ot, ok, ov, od, of, oc)
  local indexed = index_op(op_id, now_s) -- (see index_op: its undo and its update below)
  local counted = redis.pcall("HINCRBY", K_STATS, action, "1")
  if type(counted) == "table" then -- refused: undo the op id's index entry
    unindex_op(op_id, indexed)
    corrupt(K_STATS, "counter " .. action .. " is not an integer, or the key not a hash")
  end
  -- The events' XADD refused: both undone (the counter as it was: absent, and with it the
  -- hash when it was its only field, if this call created it), then the reason named.
  -- (Here, not in a function passed to publish_events: a closure made on every call cost
  -- a put ~1.5k instructions with its garbage.)
  if publish_events(stream_maxlen, rev, agent, now, events_cap, "refusable", ot, ok, ov, od, of, oc) == false then
    unindex_op(op_id, indexed)
    if counted == 1 then redis.call("HDEL", K_STATS, action) else redis.call("HINCRBY", K_STATS, action, "-1") end
    require_feed_room(rev) -- names the reason: the key's type, or an id past rev
    corrupt(K_EVENTS, "refuses revision " .. itos(rev))
  end
  if rev % 8 == 0 then
    -- The namespace's dedupe window is read only when the amortized purge is due.
    dedupe_ms = stored_limit(redis.call("HGET", K_META, "dw"), dedupe_ms) -- a hash: read above
    purge_ops(rev, now, dedupe_ms, indexed == "l")
  end
  op_indexed(op_id, now_s, indexed)
end

---------------------------------------------------------------------------------------
-- JSON merge patch (RFC 7386) on encoded text, never decoded by cjson (DESIGN.md
-- decision 9: cjson keeps 14 significant digits and turns [] into {}). The scanner only
-- finds value boundaries; scalars, arrays and strings are copied byte for byte.
---------------------------------------------------------------------------------------
local function skip_ws(s, i)
  return string.find(s, "[^ \t\r\n]", i) or (#s + 1)
end

local function scan_string(s, i) -- s[i] == '"'; returns index after the closing quote
  local j = i + 1
  while true do
    local c = string.find(s, '["\\]', j)
    if not c then error("swarm_memory: malformed JSON string") end
    if string.sub(s, c, c) == '"' then return c + 1 end
    j = c + 2
  end
end

local function scan_value(s, i) -- returns start, index after the value
  i = skip_ws(s, i)
  local c = string.sub(s, i, i)
  if c == '"' then return i, scan_string(s, i) end
  if c == "{" or c == "[" then
    local depth, j = 0, i
    while true do
      local p = string.find(s, '[%[%]{}"]', j)
      if not p then error("swarm_memory: malformed JSON container") end
      local ch = string.sub(s, p, p)
      if ch == '"' then
        j = scan_string(s, p)
      elseif ch == "{" or ch == "[" then
        depth = depth + 1
        j = p + 1
      else
        depth = depth - 1
        j = p + 1
        if depth == 0 then return i, j end
      end
    end
  end
  local e = string.find(s, "[,%]} \t\r\n]", i) or (#s + 1)
  if e == i then error("swarm_memory: malformed JSON scalar") end
  return i, e
end

-- The separator after a member's value, and the position after it.
local MEMBER_END = "^[ \t\r\n]*([,}])()"

-- One member of an object, read from i (after "{" or ","): where its key starts, the key
-- (quoted, as written), where its value starts and ends (one past), the separator after
-- it ("," or "}") and the position after that. A key with escapes and a string or
-- container value take the scanners above; anything malformed raises.
local function member_span(s, i)
  local ks, ke, vs = string.match(s, '^[ \t\r\n]*()"[^"\\]*"()[ \t\r\n]*:[ \t\r\n]*()', i)
  if not ks then -- a key with escapes (or malformed: the scanners raise)
    ks = skip_ws(s, i)
    if string.byte(s, ks) ~= 34 then error("swarm_memory: malformed JSON object") end
    ke = scan_string(s, ks)
    vs = skip_ws(s, ke)
    if string.byte(s, vs) ~= 58 then error("swarm_memory: malformed JSON object") end -- ":"
    vs = skip_ws(s, vs + 1)
  end
  local c, ve = string.byte(s, vs), nil
  if c == 34 then -- '"'
    ve = scan_string(s, vs)
  elseif c == 123 or c == 91 then -- "{" "["
    local _
    _, ve = scan_value(s, vs)
  else
    -- (a scalar holds no quote, brace or bracket: '1"b":2' is no number)
    ve = string.match(s, '^[^,}%]"{%[ \t\r\n]+()', vs)
    if not ve then error("swarm_memory: malformed JSON scalar") end
  end
  local sep, next_i = string.match(s, MEMBER_END, ve)
  if not sep then error("swarm_memory: malformed JSON object") end
  return ks, string.sub(s, ks, ke - 1), vs, ve, sep, next_i
end

-- The members the client's encoder writes most (compact: a key without escapes, no space
-- around the colon and the separator) as member_span reads them, in two matches: the key
-- and the value's first character (COMPACT_KEY), then the rest of a scalar (number,
-- true, false, null: member_span's "[^,}%] \t\r\n]+" without the characters that start
-- another kind of value) or of a string without escapes. Anything else: member_span.
local COMPACT_KEY = '^()("[^"\\]*"):()(.)'
local SCALAR_REST = '^[^,}%]"{%[ \t\r\n]*()([,}])()'
local STRING_REST = '^[^"\\]*"()([,}])()'
local NOT_SCALAR = { [","] = true, ["}"] = true, ["]"] = true, ['"'] = true, ["{"] = true,
  ["["] = true, [" "] = true, ["\t"] = true, ["\r"] = true, ["\n"] = true }

-- The member positions of the objects merges made lately (splice_patch's results, and
-- merge_patch's member by member, at every depth), as object_spans reads them
-- (SPANS_MEMO.t[text] = {keys, key starts, value starts, value ends, n}), computed while
-- each text is built from members object_spans read (the target's and the patch's), so
-- each holds what object_spans would read from that text
-- (tests/unit/test_merge_memos.py). The text a merge writes is the next merge's target: a
-- target found here is not read again, member by member (a merge of a small container
-- into 32 members: ~1.25M instructions, most of them that reading; docs/performance.md,
-- stop 32). A hit is the same bytes, never trusted because of where it was read. The
-- arrays are shared: no caller changes them. (Kept across calls in a Functions library,
-- like the other memos.) Bounded: 64 texts and 1 MiB (a member counted as 64 bytes),
-- then emptied.
local SPANS_MEMO = { t = {}, n = 0, bytes = 0, max_n = 64 }

-- A text a merge made into one of its memos (SPANS_MEMO, FLAT_MEMO: m.t[text] = value),
-- which holds at most m.max_n texts and 1 MiB (size: what this one counts), emptied when
-- this one would not fit.
local function memo_keep(m, text, value, size)
  if m.n >= m.max_n or m.bytes + size > 1048576 then m.t, m.n, m.bytes = {}, 0, 0 end
  if size <= 1048576 then m.t[text], m.n, m.bytes = value, m.n + 1, m.bytes + size end
end

-- An object's members as positions: the raw keys (quoted, as written), where each key
-- starts, and where each value starts and ends (one past). Each C call costs ~0.5-1k
-- instructions in Redis's Lua and each new string more (allocation, interning, the GC
-- that follows), so a compact member is read by two pattern matches (COMPACT_KEY, then
-- the rest of its scalar or string), where member_span takes three and a sub (a merge
-- into a 32-member object, stop 25: 688k -> 594k instructions with numbers, 793k -> 605k
-- with short strings, 1.35M -> 1.28M with small containers; docs/performance.md). A
-- container value is still found by scan_value, a string with escapes by scan_string,
-- and anything else (spaces, a key with escapes, malformed text) by member_span.
local function object_spans(s) -- s is an object's text
  local memo = SPANS_MEMO.t[s] -- (a text a merge made: its spans as the merge made them)
  if memo then return memo[1], memo[2], memo[3], memo[4], memo[5] end
  local keys, kss, vss, ves, n = {}, {}, {}, {}, 0
  local i = string.match(s, "^[ \t\r\n]*{[ \t\r\n]*()")
  if not i then error("swarm_memory: malformed JSON object") end
  if string.byte(s, i) == 125 then -- "}"
    if string.find(s, "[^ \t\r\n]", i + 1) then error("swarm_memory: malformed JSON object") end
    return keys, kss, vss, ves, 0
  end
  while true do
    local ks, key, vs, c = string.match(s, COMPACT_KEY, i)
    local ve, sep, next_i
    if not ks then
      ks, key, vs, ve, sep, next_i = member_span(s, i) -- (a key with escapes, spaces)
    elseif c == '"' then
      ve, sep, next_i = string.match(s, STRING_REST, vs + 1)
      if not ve then ve = scan_string(s, vs) end -- (escapes)
    elseif c == "{" or c == "[" then
      local _
      _, ve = scan_value(s, vs)
    elseif NOT_SCALAR[c] then
      ks, key, vs, ve, sep, next_i = member_span(s, i) -- (spaces, or malformed: it raises)
    else
      ve, sep, next_i = string.match(s, SCALAR_REST, vs + 1)
      if not ve then ks, key, vs, ve, sep, next_i = member_span(s, i) end
    end
    if not sep then -- (after a string with escapes or a container, or spaces before it)
      sep, next_i = string.match(s, MEMBER_END, ve)
      if not sep then error("swarm_memory: malformed JSON object") end
    end
    n = n + 1
    keys[n], kss[n], vss[n], ves[n] = key, ks, vs, ve
    if sep == "}" then
      -- nothing but spaces after the object ('{"a":1}x' is no object)
      if string.find(s, "[^ \t\r\n]", next_i) then error("swarm_memory: malformed JSON object") end
      return keys, kss, vss, ves, n
    end
    i = next_i
  end
end

-- The members as two lists, raw keys and raw values.
local function object_members(s)
  local keys, _, vss, ves, n = object_spans(s)
  local vals = {}
  for j = 1, n do vals[j] = string.sub(s, vss[j], ves[j] - 1) end
  return keys, vals, n
end

local function is_object(raw)
  return raw ~= nil and string.find(raw, "^[ \t\r\n]*{") ~= nil
end

-- A flat object (what a swarm's shared status object usually is: scalars and strings
-- under keys), spliced without reading its members one by one. Taken for a patch of at
-- most FLAT_MAX_KEYS keys when the target is compact text, "{" first, with no "\1",
-- backslash, "[", "]" or other "{" (a "[" or "{" only spares a nested object the
-- skeleton's passes: it refuses them too), and its skeleton checks: every string becomes
-- a "\1" (without escapes '%b""' is a whole string), each member (a key, ":", a string
-- or a scalar: a run of the characters object_spans reads as one) an "M", and
-- "{M,M,...,M}" must be what is left. Stricter than the members' reading below, never
-- looser: what it refuses takes that reading, which raises on malformed text. In such a
-- text '"k":' occurs only where key k starts, unless k starts with what follows a
-- closing quote (":", "," or "}"), so each patch key is found by a plain find; such a
-- key, or one the target repeats (a second find), takes splice_patch's reading. The
-- result is splice_patch's text for the same target. A key repeated in the target but
-- not in the patch is copied as it stands, where merge_patch's general path keeps one
-- (its last value, at its first place): the same decoded value either way. Lua 5.1's
-- matcher costs ~25 instructions a position for a literal and more for a class (a "%w"
-- or "%z" calls into the C library for every character), so the checks are plain finds
-- and literal patterns but one class of literals, over the scalars' characters only. A
-- merge into 32 members: 594k -> 422k instructions (docs/performance.md, "The flat
-- merge, stop 26").
local FLAT_KEY_UNSAFE = { [58] = true, [44] = true, [125] = true } -- ":" "," "}"
-- (object_spans' scalar characters; "]" is refused before: "%]" costs a tolower a character)
local FLAT_SCALAR_MEMBER = '\1:[^,}"\1 \t\r\n]+'
-- A patch of more keys takes the members' reading: each key costs a find over the whole
-- target, and a patch as long as the value limit allows would make that quadratic.
local FLAT_MAX_KEYS = 8
-- The flat texts this library made lately: flat_splice's results whose every member it
-- checked (the target's by flat_text below, each new one by FLAT_NEW_KEY and
-- FLAT_NEW_VALUE), so each passes flat_text (tests/unit/test_merge_memos.py). The text a
-- merge writes is the next merge's target, and one found here skips flat_text: its
-- skeleton's three passes were ~80k of a 32-member merge's ~390k instructions
-- (callgrind, stop 32; the pattern matcher runs every character, docs/performance.md).
-- A hit is the same bytes as a text made here, never trusted because of where it was
-- read: a stored value changed by anything else is another string and takes the checks.
-- (Kept across calls where the library is a Functions library, like the other memos;
-- EVALSHA starts each call with it empty.) Bounded: 256 texts and 1 MiB, then emptied.
local FLAT_MEMO = { t = {}, n = 0, bytes = 0, max_n = 256 }
-- A new member's key and value as flat_text takes them: a key is a string with none of
-- the refused characters and no quote inside (it starts with none of ":", "," and "}":
-- FLAT_KEY_UNSAFE, checked before); a value the same, or a scalar run.
local FLAT_NEW_KEY = '^"[^"\\\1{%[%]]*"$'
local FLAT_NEW_VALUE = '^[^,}"\1 \t\r\n{%[%]\\]+$'

-- Whether a target passes the checks described above flat_splice: "{" first, none of
-- the refused characters, and its skeleton "{M,M,...,M}" (or "{}").
local function flat_text(target)
  if string.byte(target, 1) ~= 123 or string.find(target, "{", 2, true)
    or string.find(target, "[", 2, true) or string.find(target, "]", 2, true)
    or string.find(target, "\1", 2, true) or string.find(target, "\\", 2, true) then
    return false
  end
  if target == "{}" then return true end
  local skeleton, n_strings = string.gsub(target, '%b""', "\1")
  if n_strings == 0 then return false end
  local n1, n2
  skeleton, n1 = string.gsub(skeleton, "\1:\1", "M")
  skeleton, n2 = string.gsub(skeleton, FLAT_SCALAR_MEMBER, "M")
  return skeleton == "{" .. string.rep("M,", n1 + n2 - 1) .. "M}"
end

local function flat_splice(target, pk, pv, pn)
  if pn > FLAT_MAX_KEYS or not (FLAT_MEMO.t[target] or flat_text(target)) then return nil end
  -- found: (key start, value end (one past), patch index) of each patch key present, in
  -- target order; hit: the patch indexes found
  local found, nf, hit = {}, 0, {}
  for j = 1, pn do
    local k = pk[j]
    -- (a key starting with ":", "," or "}" could match where a string ends; one with
    -- escapes is not spelled as the target spells it)
    if FLAT_KEY_UNSAFE[string.byte(k, 2)] or string.find(k, "\\", 1, true) then return nil end
    local ks = string.find(target, k .. ":", 2, true)
    if ks then
      local vs = ks + #k + 1
      if string.find(target, k .. ":", vs, true) then return nil end
      local ve
      if string.byte(target, vs) == 34 then -- '"'
        ve = string.find(target, '"', vs + 1, true) + 1
      else
        ve = string.find(target, "[,}]", vs)
      end
      -- in target order (an insertion: a patch has few keys)
      local at = nf + 1
      while at > 1 and found[at - 1][1] > ks do
        found[at] = found[at - 1]
        at = at - 1
      end
      found[at] = { ks, ve, j }
      nf, hit[j] = nf + 1, true
    end
  end
  -- The unchanged runs between the found members, each found member with its new value
  -- (or none: a null cuts it), then the new members, joined by ",".
  local out, m, pos, last = {}, 0, 2, #target - 1
  for f = 1, nf do
    local ks, ve, j = found[f][1], found[f][2], found[f][3]
    if ks - 1 > pos then m = m + 1; out[m] = string.sub(target, pos, ks - 2) end
    local v = pv[j]
    if v ~= "null" then m = m + 1; out[m] = pk[j] .. ":" .. v end
    pos = ve + 1
  end
  if pos <= last then m = m + 1; out[m] = string.sub(target, pos, last) end
  for j = 1, pn do
    local v = pv[j]
    if not hit[j] and v ~= "null" then m = m + 1; out[m] = pk[j] .. ":" .. v end
  end
  local result = "{" .. table.concat(out, ",", 1, m) .. "}"
  -- Into the memo when every member written is one the checks would pass (a patch's
  -- members are short: the patterns run over a few characters each).
  for j = 1, pn do
    local v = pv[j]
    if v ~= "null" and not (string.find(pk[j], FLAT_NEW_KEY)
      and (string.find(v, FLAT_NEW_VALUE) or string.find(v, FLAT_NEW_KEY))) then
      return result
    end
  end
  memo_keep(FLAT_MEMO, result, true, #result)
  return result
end

-- The common merge: an object target without repeated keys, and a patch of distinct keys
-- none of whose values is an object (scalars, arrays and nulls replace or remove): the
-- target's text with those values replaced, those members cut out and the new members
-- appended, copied in runs instead of rebuilt member by member (a 32-member object:
-- ~450k instructions less, docs/performance.md). The same text as merge_patch's general
-- path below for a compact target (what the client stores), or nil to take that path.
-- A flat target takes flat_splice, which finds only the patch's keys.
local function splice_patch(target, pk, pv, pn)
  local edit = {}
  for j = 1, pn do
    local v = pv[j]
    if edit[pk[j]] ~= nil or string.byte(v, 1) == 123 then return nil end -- "{"
    edit[pk[j]] = v
  end
  local flat = flat_splice(target, pk, pv, pn)
  if flat then return flat end
  local keys, kss, vss, ves, n = object_spans(target)
  local found = {}
  for j = 1, n do
    if found[keys[j]] then return nil end -- a repeated key: the general path's rules
    found[keys[j]] = true
  end
  -- out: the texts to join; run: the first member of the unchanged run being copied
  -- (appended in place: a closure made per call cost ~1k instructions with its garbage).
  -- And the result's spans as object_spans would read them (SPANS_MEMO): o is where the
  -- next text joined starts in the result ("{" is at 1; a "," after each text).
  local out, m, run = {}, 0, nil
  local rk, rks, rvs, rve, rn, o = {}, {}, {}, {}, 0, 2
  for j = 1, n + 1 do
    local v
    if j <= n then v = edit[keys[j]] end
    if j <= n and v == nil then
      run = run or j
    else
      if run then
        local last = j - 1 -- (the run's last member)
        m = m + 1; out[m] = string.sub(target, kss[run], ves[last] - 1)
        local d = o - kss[run]
        for t = run, last do
          rn = rn + 1
          rk[rn], rks[rn], rvs[rn], rve[rn] = keys[t], kss[t] + d, vss[t] + d, ves[t] + d
        end
        o = ves[last] + d + 1
      end
      run = nil
      if v ~= nil and v ~= "null" then
        m = m + 1; out[m] = string.sub(target, kss[j], vss[j] - 1) .. v
        rn = rn + 1
        local vs = o + vss[j] - kss[j]
        rk[rn], rks[rn], rvs[rn], rve[rn] = keys[j], o, vs, vs + #v
        o = vs + #v + 1
      end
    end
  end
  for j = 1, pn do
    local k, v = pk[j], pv[j]
    if not found[k] and v ~= "null" then
      m = m + 1; out[m] = k .. ":" .. v
      rn = rn + 1
      local vs = o + #k + 1
      rk[rn], rks[rn], rvs[rn], rve[rn] = k, o, vs, vs + #v
      o = vs + #v + 1
    end
  end
  local result = "{" .. table.concat(out, ",", 1, m) .. "}"
  memo_keep(SPANS_MEMO, result, { rk, rks, rvs, rve, rn }, #result + 64 * rn)
  return result
end

-- Arrays and scalars in the patch replace the target's value wholesale (RFC 7386).
local function merge_patch(target, patch)
  if not is_object(patch) then return patch end
  if is_object(target) then
    local pk, pv, pn = object_members(patch)
    local spliced = splice_patch(target, pk, pv, pn)
    if spliced then return spliced end
  end
  local values, order, n_order = {}, {}, 0
  if is_object(target) then
    local tk, tv, tn = object_members(target)
    for j = 1, tn do
      n_order = n_order + 1
      order[n_order] = tk[j]
      values[tk[j]] = tv[j]
    end
  end
  local pk, pv, pn = object_members(patch)
  for j = 1, pn do
    local k, v = pk[j], pv[j]
    if v == "null" then
      values[k] = nil
    else
      if values[k] == nil then
        n_order = n_order + 1
        order[n_order] = k
      end
      values[k] = merge_patch(values[k], v)
    end
  end
  -- (and the result's spans, each member "k:v" after "{" or ",": see splice_patch)
  local out, seen, n_out = {}, {}, 0
  local rk, rks, rvs, rve, o = {}, {}, {}, {}, 2
  for j = 1, n_order do
    local k = order[j]
    local v = values[k]
    if v ~= nil and not seen[k] then
      seen[k] = true
      n_out = n_out + 1
      out[n_out] = k .. ":" .. v
      local vs = o + #k + 1
      rk[n_out], rks[n_out], rvs[n_out], rve[n_out] = k, o, vs, vs + #v
      o = vs + #v + 1
    end
  end
  local result = "{" .. table.concat(out, ",") .. "}"
  memo_keep(SPANS_MEMO, result, { rk, rks, rvs, rve, n_out }, #result + 64 * n_out)
  return result
end

-- A "P" item's value in a merge namespace (write.lua, put.lua): the stored JSON text
-- merged with the patch, or nil and why only the client can merge it ("patch": the patch
-- is not plain JSON text, the client sends it again uncompressed; "stored": the value is
-- stored compressed or in another codec, the client merges it). A patch applied to
-- nothing drops its nulls too. The patch is the client's (valid JSON): a scan that
-- fails is the stored value's, CorruptData naming the entry.
local function merged_value(ekey, cur, fmt, patch)
  if fmt ~= "json" then return nil, "patch" end
  if cur and cur.f ~= "json" then return nil, "stored" end
  local ok, merged = pcall(merge_patch, cur and cur.v or "{}", patch)
  if not ok then corrupt(ekey, "stored value is not the JSON its format says") end
  return merged
end

---------------------------------------------------------------------------------------
-- Lock records (DESIGN.md decision 7). K_LOCKH[name] = pack({mode, owner, agent, x, token,
-- ...}): mode "x" (one exclusive holder) or "s" (shared holders); x = lease expiry ms.
-- K_LOCKS[name] = the latest expiry among holders, so expired records are found by score.
-- Fencing tokens come from one counter per namespace, so they strictly increase per lock;
-- a record only lives while some holder's lease does. The counter is K_LOCKH's field
-- LOCK_COUNTER (since stop 34; before, meta "lt", which ns.lua still sets at create and
-- an acquire reads while K_LOCKH has no counter): an acquire reads it with the lock's
-- record in one HMGET and writes it with the record in one HSET, two Redis calls fewer
-- than reading and writing meta (docs/performance.md, "The fencing counter beside the lock
-- records, stop 34").
---------------------------------------------------------------------------------------
-- The counter's field: no lock name starts with NUL (keys.key_arg refuses control
-- characters), and every script that takes a lock name refuses this one (lock_name).
local LOCK_COUNTER = "\0lt"

-- A lock name from a call's arguments; the counter's field is no lock's.
local function lock_name(name)
  if name == LOCK_COUNTER then error("swarm_memory: bad lock name") end
  return name
end

-- At most this many holders in one record (shared locks): a bound on every loop over a
-- record, whatever its stored length says.
local MAX_HOLDERS = 10000

-- A lock's record as read_lock gives it, from its stored text (raw: nil or false when
-- there is none).
local function read_lock_text(raw, now)
  local rec = { mode = "", holders = {} }
  if not raw then return rec end
  local f = unpack_list(raw, K_LOCKH, 1 + 4 * MAX_HOLDERS)
  if (f[1] ~= "x" and f[1] ~= "s") or #f < 5 or (#f - 1) % 4 ~= 0 then
    corrupt(K_LOCKH, "malformed lock record")
  end
  rec.mode = f[1]
  for j = 2, #f, 4 do
    -- (stored_int: the texts the acquire formatted are in its memo when the release reads them)
    local h = { owner = f[j], agent = f[j + 1], x = stored_int(f[j + 2]), token = stored_int(f[j + 3]) }
    if not (h.x and h.token) then corrupt(K_LOCKH, "malformed lock record") end
    if h.x > now then
      rec.holders[#rec.holders + 1] = h
    else -- (a lapsed hold: its agent and its token's text, for untie_lapsed)
      local lapsed = rec.lapsed
      if not lapsed then lapsed = {}; rec.lapsed = lapsed end
      lapsed[#lapsed + 1] = h.agent
      lapsed[#lapsed + 1] = f[j + 3]
    end
  end
  return rec, f
end

local function read_lock(name, now)
  return read_lock_text(read_call("HGET", K_LOCKH, lock_name(name)), now)
end

-- The stored text of a lock record with one holder (an exclusive lock, the common case):
-- pack()'s text in one concatenation. What write_lock_record stores, and what a release
-- compares its own copy with (release.lua): one builder, so the two cannot drift apart.
local function lock_record_text(mode, owner, agent, x_s, token_s)
  local P = PACK_PREFIX
  return (P[#mode] or pack_prefix(mode)) .. mode .. (P[#owner] or pack_prefix(owner)) .. owner
    .. (P[#agent] or pack_prefix(agent)) .. agent .. (P[#x_s] or pack_prefix(x_s)) .. x_s
    .. (P[#token_s] or pack_prefix(token_s)) .. token_s
end

-- The stored record of a lock with holders (HSET only); returns their latest expiry as
-- text, the lock's score in K_LOCKS (which the caller writes: a release writes it first,
-- as a refusable write, to check its type without a TYPE call). counter: the fencing
-- counter's new value as text (an acquire's), written in the same HSET, or nil.
local function write_lock_record(name, rec, counter)
  local text, x
  if #rec.holders == 1 then
    local h = rec.holders[1]
    x = itos(h.x)
    text = lock_record_text(rec.mode, h.owner, h.agent, x, itos(h.token))
  else
    local f, latest = { rec.mode }, 0
    for _, h in ipairs(rec.holders) do
      local n = #f
      f[n + 1], f[n + 2], f[n + 3], f[n + 4] = h.owner, h.agent, h.x, h.token
      if h.x > latest then latest = h.x end
    end
    text, x = pack(f), itos(latest)
  end
  if counter then
    redis.call("HSET", K_LOCKH, name, text, LOCK_COUNTER, counter)
  else
    redis.call("HSET", K_LOCKH, name, text)
  end
  return x
end

-- The lease ties of a record's lapsed holders (rec.lapsed, from read_lock_text: agent
-- and token text, in pairs), dropped when the record is written without them: each
-- lapsed hold's own tie (lock_tie), and an older client's tie of the agent and lock
-- (eph_member(agent, "l", name)) where the agent holds the lock no more. A tie left
-- behind would let the reaper, when that agent's lease ends, drop a later hold of the
-- same lock the agent took without a lease. Every rewrite of a record read with lapsed
-- holders comes here (write_lock; an acquire before it adds its holder; a release).
-- (pcall: a tie set of the wrong type fails the reaper's read of it as corrupt data; it
-- must not fail a lock's write half-way.)
-- (Linear in the record's holders, which MAX_HOLDERS bounds: the live agents in a set
-- first, one ZREM a lapsed hold.)
local function untie_lapsed(name, rec)
  local lapsed = rec.lapsed
  if not lapsed then return end
  rec.lapsed = nil
  local kept = {}
  for _, h in ipairs(rec.holders) do kept[h.agent] = true end
  for j = 1, #lapsed, 2 do
    local a = lapsed[j]
    if kept[a] then
      redis.pcall("ZREM", K_EPH, lock_tie(a, name, lapsed[j + 1]))
    else
      kept[a] = true
      redis.pcall("ZREM", K_EPH, lock_tie(a, name, lapsed[j + 1]), eph_member(a, "l", name))
    end
  end
end

local function write_lock(name, rec, counter)
  untie_lapsed(name, rec)
  if #rec.holders == 0 then
    redis.call("HDEL", K_LOCKH, name)
    redis.call("ZREM", K_LOCKS, name)
    return
  end
  redis.call("ZADD", K_LOCKS, write_lock_record(name, rec, counter), name)
end

-- The newest token among live holders (0 when free).
local function lock_token(rec)
  local t = 0
  for _, h in ipairs(rec.holders) do if h.token > t then t = h.token end end
  return t
end

-- The position of `owner` among a record's live holders, or nil. (This and the two
-- replies below are library functions, not closures a lock call builds every time.)
local function lock_holder(rec, owner)
  local holders = rec.holders
  for j = 1, #holders do
    if holders[j].owner == owner then return j end
  end
  return nil
end

local function lock_not_owned(rec)
  local holder = ""
  if rec.holders[1] then holder = rec.holders[1].agent end
  return { "not_owned", holder }
end

local function lock_busy(rec, now)
  local newest = rec.holders[1]
  for _, h in ipairs(rec.holders) do if h.x > newest.x then newest = h end end
  return { "held", newest.agent, newest.x, now, lock_token(rec) }
end

-- Fenced writes are accepted only from a live exclusive holder with exactly this token: a
-- token is stale once a newer one was issued, and also once its own lease ran out.
local function fence_problem(name, token, now)
  local rec = read_lock(name, now)
  if rec.mode == "x" then
    for _, h in ipairs(rec.holders) do
      if h.token == token then return nil end
    end
  end
  local latest = lock_token(rec)
  if latest > token then return "stale", latest end
  return "not_held", latest
end

-- Drop records whose every lease ran out (a few per call; any lock call does this). All
-- are read before any is removed; a record that does not parse is expired by its index
-- all the same, so it is removed without its lease ties (one corrupt record must not
-- block every lock of the namespace). Such a tie names its hold's token, which no later
-- hold has: the reaper drops it and no hold (an older client's tie of the agent and
-- lock alone stays; the reaper following it spares the agent's holds this version takes
-- without a lease, docs/guarantees.md, 17).
local function prune_locks(now, n)
  -- The earliest expiry first (no number to format, ~7k instructions less): usually none
  -- is due, or the index is empty. (Also K_LOCKS's type check for the caller's writes.)
  -- (read_call's check, inline: ZRANGE answers a table either way; no varargs call)
  local first = redis.pcall("ZRANGE", K_LOCKS, "0", "0", "WITHSCORES")
  if first.err then corrupt(K_LOCKS, "holds the wrong type for ZRANGE") end
  if not first[2] or tonumber(first[2]) > now then return end
  local names = read_call("ZRANGEBYSCORE", K_LOCKS, "-inf", itos(now), "LIMIT", "0", itos(n))
  if #names == 0 then return end
  local records = {}
  for i, name in ipairs(names) do
    local ok, _, f = pcall(read_lock, name, now)
    if ok then records[i] = f end
  end
  require_kinds({ K_LOCKH, "hash", K_EPH, "zset" })
  for i, name in ipairs(names) do
    local f = records[i]
    if f then
      for j = 2, #f, 4 do
        redis.call("ZREM", K_EPH, lock_tie(f[j + 1], name, f[j + 3]), eph_member(f[j + 1], "l", name))
      end
    end
    -- (a name in the index that is the counter's field, which only a hand-made index
    -- holds, leaves the counter as it is)
    if name ~= LOCK_COUNTER then redis.call("HDEL", K_LOCKH, name) end
    redis.call("ZREM", K_LOCKS, name)
  end
end
