--! keys: meta acl stats idx lru exp events audit ops opst bell lease eph lockh +items(entry hist) +victims(entry hist)
--! args: agent op_id limits counts action digest echo eph_ms +items(head key value) +fences(item lock token) +victims(key)
--! returns: {"ok", rev, sweep_due, n_items, (status ver cr mr ct mt x size value fmt)..., n_evicted, name...} | {"dup", record, sweep_due} | {"nons"} | {"denied", granted} | {"conflict", i, entry...} | {"txn_conflict", n, (i, entry...)...} | {"version_required", i, strategy} | {"fenced", i, lock, token, latest, reason} | {"quota", kind, limit, current, requested} | {"victims", wanted} | {"lru", token} | {"merge_fallback", i, "patch"|"stored"} | {"not_integer", i} | {"too_large", i, size}
--
-- Every write in one script (DESIGN.md decision 2): permission, dedupe, strategy and
-- expected-version checks, quota (with evict-oldest), value + metadata, versions and the
-- namespace revision, indexes, TTL, history, events, stats and the op record. A write's
-- audit record is its event (DESIGN.md decision 2, revised): the first put/delete/touch
-- event of the revision carries the call's action as "c" when it is not the event's type
-- (incr, create, put_many, ...); events.lua's audit action reads writes from the feed.
-- Only a denial goes to the audit stream from here.
-- Phase 1 validates and computes everything without writing; phase 2 only writes, because
-- Redis does not roll back a script that fails halfway.
--
-- Item ops: P = put by the namespace strategy, S = set the whole value (never merged),
-- D = delete, I = increment an integer, T = touch (change the expiry only), C = compare
-- only (a transaction's condition on a key it does not write).
-- Fences: (item, lock, token) triples; an item may be written only while `token` is held
-- (exclusively, unexpired) on `lock`. eph_ms: ties the written entries to the agent's lease
-- in this namespace (started for eph_ms if it has none).
-- The client's numbers come packed (each argument costs the server ~0.6-1.2k, see
-- int_fields): limits = "<dedupe_ms> <stream_maxlen> <audit_maxlen> <max_value_bytes>
-- <event_value_max>" (the same on every call of a client), counts = "<n_items> <n_victims>
-- <n_fences>", and an item's head "<op> <expected> <ttl_ms> <fmt>" (item_head).
-- The names: the fourteen of the sixteen a write uses (not K_LOCKS, K_LBELL: lock.lua's;
-- K_IDX..K_EPH and K_LOCKH in the sixteen's order), then the items' and victims'.
local agent, op_id = ARGV[1], ARGV[2]
local limits = int_fields(ARGV[3], 5, "limits")
local dedupe_ms, stream_maxlen, audit_maxlen, max_value_bytes = limits[1], limits[2], limits[3], limits[4]
local counts = int_fields(ARGV[4], 3, "counts")
local n_items, n_victims, n_fences = counts[1], counts[2], counts[3]
local action = ARGV[5]
-- digest: the client's fingerprint of this request, kept with the op record so a replay
-- of the op id with a different request is caught (the client compares). echo = "1":
-- put every written value in the reply (and so in the op record), for CAS loops whose
-- replays must report the value that was actually written.
local digest, echo = ARGV[6], ARGV[7] == "1"
-- Values up to this many encoded bytes ride along in their "put" event (0 = never).
local event_value_max = limits[5]
local eph_ms = opt_int(ARGV[8], "eph_ms")
local ARG0, ITEM_ARGS, FENCE_ARGS = 8, 3, 3
local FENCE0 = ARG0 + ITEM_ARGS * n_items
local VICTIM0 = FENCE0 + FENCE_ARGS * n_fences
local VICTIM_KEY0 = N_FIXED + 2 * n_items

if #KEYS ~= N_FIXED + 2 * n_items + 2 * n_victims or #ARGV ~= VICTIM0 + n_victims then
  error("swarm_memory: write called with mismatched KEYS/ARGV")
end

-- The namespace state, the caller's permission, the clock and the replay (write_gate).
local stop, cfg, now, n_keys, n_bytes, meta_rev = write_gate(agent, op_id, action, ARGV[ARG0 + 2], audit_maxlen)
if stop then return stop end

local strategy, default_ttl = cfg.strat, cfg.ttl
local max_keys, max_bytes, history_depth = cfg.mk, cfg.mb, cfg.hd
local require_lock = cfg.rl
local events_cap = cfg.em
-- The eviction-order index (K_LRU: entry name -> revision of its last write) is kept only
-- where it is used, in an evict-oldest namespace: elsewhere it cost every write a ZADD
-- and a TYPE check (~17k instructions) and every entry ~100 bytes of Redis memory
-- (docs/performance.md). A namespace switched to evict-oldest rebuilds it from its
-- entries' "mr" (lua/lru.lua; "lx" in K_META while that is unfinished).
local keeps_order = cfg.oq == "evict-oldest"

-- Fencing (decision 7): checked before anything else is decided; the store itself
-- refuses writes from a holder whose lease was lost or superseded (fenced_reply).
-- (Tables a call may not need are made when it does: each costs ~0.5-1k with its GC.)
local fenced = n_fences > 0 and {} or nil
for j = 1, n_fences do
  local b = FENCE0 + (j - 1) * FENCE_ARGS
  local i, lock, token = int_arg(ARGV[b + 1], "fence item"), ARGV[b + 2], int_arg(ARGV[b + 3], "token")
  local reason, latest = fence_problem(lock, token, now)
  if reason then return fenced_reply(i, lock, token, latest, reason) end
  if require_lock and lock ~= ARGV[ARG0 + (i - 1) * ITEM_ARGS + 2] then
    return fenced_reply(i, lock, token, token, "wrong_lock") -- the fence itself is current
  end
  fenced[i] = true
end
if require_lock then
  -- Every written key needs its own lock's current token (compares need none).
  for i = 1, n_items do
    local a = ARG0 + (i - 1) * ITEM_ARGS
    if not (fenced and fenced[i]) and string.sub(ARGV[a + 1], 1, 1) ~= "C" then
      local name = ARGV[a + 2]
      return fenced_reply(i, name, 0, lock_token(read_lock(name, now)), "required")
    end
  end
end

-- A transaction reports every failed compare, not only the first. The entries it reads
-- here are kept for phase 1 (read once per script).
local read_ahead
if action == "transaction" then
  read_ahead = {}
  local failed = {}
  for i = 1, n_items do
    local a = ARG0 + (i - 1) * ITEM_ARGS
    local _, expected = item_head(ARGV[a + 1])
    if expected ~= nil then
      local cur, expired, stale = read_entry(KEYS[N_FIXED + 2 * i - 1], now)
      read_ahead[i] = { cur, expired, stale }
      if (expected == 0 and cur) or (expected > 0 and (not cur or cur.ver ~= expected)) then
        failed[#failed + 1] = i
        for _, x in ipairs(entry_reply(cur)) do failed[#failed + 1] = x end
        failed.n = (failed.n or 0) + 1
      end
    end
  end
  if failed.n then
    local r = { "txn_conflict", failed.n }
    for _, x in ipairs(failed) do r[#r + 1] = x end
    return r
  end
end

---------------------------------------------------------------------------- phase 1
local plan = {}
local key_delta, byte_delta = 0, 0
for i = 1, n_items do
  local a = ARG0 + (i - 1) * ITEM_ARGS
  local op, expected, ttl_ms, fmt = item_head(ARGV[a + 1])
  local name, value = ARGV[a + 2], ARGV[a + 3]
  local ekey, hkey = KEYS[N_FIXED + 2 * i - 1], KEYS[N_FIXED + 2 * i]
  local cur, expired, stale_entry
  if read_ahead and read_ahead[i] then
    cur, expired, stale_entry = read_ahead[i][1], read_ahead[i][2], read_ahead[i][3]
  else
    cur, expired, stale_entry = read_entry(ekey, now)
  end
  -- Every field a plan gets, named here: the table is made at its final size (a field
  -- added later makes Lua grow it, rehashing every field: put_many(100) 11.64M -> 11.36M
  -- instructions, docs/performance.md).
  local p = { op = op, name = name, ekey = ekey, hkey = hkey, cur = cur, expired = stale_entry,
    status = false, value = false, fmt = false, computed = false, x = false, ver = false, cr = false,
    ct = false }

  local refused = compare_refused(i, op, expected, cur, strategy)
  if refused then return refused end

  local old_size = 0
  if cur then old_size = #cur.v elseif stale_entry then old_size = #stale_entry.v end
  local existed = (cur ~= nil) or (stale_entry ~= nil)

  if op == "C" then
    p.status = "c"
    if existed and not cur then key_delta, byte_delta = key_delta - 1, byte_delta - old_size end
  elseif op == "D" or op == "T" then
    if not cur then
      p.status = "a"
    else
      p.status = (op == "D") and "d" or "t"
    end
    if op == "T" then p.x = now + ttl_ms end
    if op == "D" and cur then key_delta, byte_delta = key_delta - 1, byte_delta - old_size end
    if existed and not cur then key_delta, byte_delta = key_delta - 1, byte_delta - old_size end
  else
    local new_value, new_fmt, computed = value, fmt, false
    if op == "I" then
      new_value = incremented(cur, value)
      if not new_value then return { "not_integer", i } end
      new_fmt, computed = "json", true
    elseif op == "P" and strategy == "merge" then
      local merged, why = merged_value(ekey, cur, fmt, value)
      if not merged then return { "merge_fallback", i, why } end
      new_value, computed = merged, true
    end
    if #new_value > max_value_bytes then return { "too_large", i, #new_value } end
    p.value, p.fmt, p.computed, p.status = new_value, new_fmt, computed, "w"
    if ttl_ms then
      p.x = now + ttl_ms
    elseif op == "I" and cur then
      p.x = cur.x -- counters keep their expiry, like Redis INCR
    elseif default_ttl > 0 then
      p.x = now + default_ttl
    else
      p.x = 0
    end
    if not existed then key_delta = key_delta + 1 end
    byte_delta = byte_delta + #new_value - old_size
  end
  plan[i] = p
end

-- Quotas. Updating an existing key never counts against max_keys; bytes count by delta.
local victims = {}
local kind, limit, current, requested
if (max_keys > 0 and key_delta > 0) or (max_bytes > 0 and byte_delta > 0) then -- (else none)
  kind, limit, current, requested = quota_over(n_keys + key_delta, n_bytes + byte_delta,
    max_keys, max_bytes, n_keys, n_bytes, key_delta, byte_delta)
end
if kind then
  if not keeps_order then return { "quota", kind, limit, current, requested } end
  -- The index is still being rebuilt after a switch to evict-oldest: the caller finishes
  -- the rebuild (lru.lua) and calls again. Until then its oldest are not the oldest.
  local rebuilding = read_call("HGET", K_META, "lx")
  if rebuilding then return { "lru", rebuilding } end
  -- The caller passes the oldest keys it saw (not in this batch); they must still be the
  -- oldest, or the caller retries with a fresh list. Keys cannot be named inside Lua.
  local oldest = read_call("ZRANGE", K_LRU, 0, n_victims + n_items + 8)
  local in_batch = {}
  for i = 1, n_items do in_batch[plan[i].name] = true end
  local expect = {}
  for _, name in ipairs(oldest) do
    if not in_batch[name] and #expect < n_victims then expect[#expect + 1] = name end
  end
  for j = 1, n_victims do
    if expect[j] ~= ARGV[VICTIM0 + j] then return { "victims", n_victims } end
  end
  local nk, nb, satisfied = n_keys + key_delta, n_bytes + byte_delta, false
  for j = 1, n_victims do
    local ekey = KEYS[VICTIM_KEY0 + 2 * j - 1]
    local size = read_call("HSTRLEN", ekey, "v")
    victims[j] = { name = expect[j], ekey = ekey, hkey = KEYS[VICTIM_KEY0 + 2 * j], size = size }
    nk, nb = nk - 1, nb - size
    key_delta, byte_delta = key_delta - 1, byte_delta - size
    if not quota_over(nk, nb, max_keys, max_bytes, n_keys, n_bytes, key_delta, byte_delta) then
      satisfied = true
      break
    end
  end
  if not satisfied then
    local candidates = redis.call("ZCARD", K_LRU)
    for name in pairs(in_batch) do
      if redis.call("ZSCORE", K_LRU, name) then candidates = candidates - 1 end
    end
    -- (not math.max: this body is near Lua 5.1's 60 upvalues a function, and each
    -- library table or function it names is one)
    if candidates > n_victims then return { "victims", n_victims > 2 and 2 * n_victims or 4 } end
    return { "quota", kind, limit, current, requested }
  end
end

---------------------------------------------------------------------------- phase 2
-- Nothing is written before every key the writes touch is known to hold its type: those
-- read above (meta, ops, entries, lock records) were read with read_call, the sweep
-- check below reads the expiry and lease indexes, the stats hash is read for its
-- counters, and the events stream is the first write (its XADD refuses, writing
-- nothing, when the key is not a stream or holds ids past this revision); the rest get
-- one TYPE each, only when written (DESIGN.md decision 2).
local changed = #victims > 0 -- a call that changes nothing takes no revision (etcd)
local drops = #victims > 0 -- entries removed from every index (drop_entry)
local new_keys = false
local kinds = {} -- the op record's purge index and the stats hash: see 2b
local eph_kinds = eph_ms ~= nil or #victims > 0 -- a victim may be tied to a lease
for i = 1, n_items do
  local p = plan[i]
  local st = p.status
  if (st ~= "a" and st ~= "c") or p.expired then changed = true end
  if p.expired or st == "d" then drops = true end
  if st == "w" and not p.cur then new_keys = true end
  if p.cur and history_depth > 0 and st == "w" then
    kinds[#kinds + 1], kinds[#kinds + 2] = p.hkey, "hash"
  end
  if (p.cur and p.cur.eo) or (p.expired and p.expired.eo) then eph_kinds = true end
end
if changed and keeps_order then kinds[#kinds + 1], kinds[#kinds + 2] = K_LRU, "zset" end
if drops or new_keys then kinds[#kinds + 1], kinds[#kinds + 2] = K_IDX, "zset" end
if eph_kinds then kinds[#kinds + 1], kinds[#kinds + 2] = K_EPH, "zset" end
if eph_ms then kinds[#kinds + 1], kinds[#kinds + 2] = K_LEASE, "zset" end
if kinds[1] then require_kinds(kinds) end
if #victims > 0 then require_counters(K_STATS, "evicted") end
-- Read before the writes (it reads K_EXP and K_LEASE, so they need no TYPE): an entry
-- this call drops as expired may still count as due; the extra sweep finds nothing.
-- (sweep_due's common case inline: neither index exists, one EXISTS, no call)
local due = redis.call("EXISTS", K_EXP, K_LEASE) ~= 0 and sweep_due_read(now) or 0
local rev = meta_rev
if changed then rev = rev + 1 end
-- Numbers several writes and the reply take, as text once (redis.call formats every
-- number it gets).
local rev_s, now_s = itos(rev), itos(now)

-- 2a: what the writes will be, and their events, computed without writing.
-- reply: what the client reads now; recs / vals: the compact op record kept for the
-- dedupe window (per item: status and numbers; values only where the reply has them).
local evicted = victims[1] and {} or victims -- (none, almost always: the same empty table)
for j = 1, #victims do
  local v = victims[j]
  event("evict", v.name, stored_version(v.ekey))
  evicted[j] = v.name
end
-- One item's reply made at its final size (15: head, ten fields, n_evicted): the nils
-- size the table's array part, which Lua would otherwise grow twice, rehashing.
local reply
if n_items == 1 then
  reply = { "ok", rev, due, 1, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil }
else
  reply = { "ok", rev, due, n_items }
end
local recs, vals = {}, {}
-- The call's action rides on its first item event when the type does not say it
-- (taken by the first event below: call_tag, then nil; the same when it is the type).
local call_tag = action
for i = 1, n_items do
  local p = plan[i]
  if p.expired then event("expire", p.name, p.expired.ver) end
  local cur, st, out = p.cur, p.status, nil
  if st == "w" then -- the common case first
    -- (p.cr, p.ct as text, like the entry's: see unpack_entry)
    if cur then p.ver, p.cr, p.ct = cur.ver + 1, cur.cr, cur.ct else p.ver, p.cr, p.ct = 1, itos(rev), now_s end
    local c = call_tag
    call_tag = nil
    if c == "put" then c = nil end
    if #p.value <= event_value_max then
      event("put", p.name, p.ver, p.value, p.fmt, c)
    else
      event("put", p.name, p.ver, nil, nil, c)
    end
    local vout, fout = "", ""
    if p.computed or echo then vout, fout = p.value, p.fmt end
    -- Straight into the reply (no 10-slot table per item).
    local r, size = #reply, #p.value
    -- (The revisions and times as text, like p.cr and p.ct: the client parses either.)
    reply[r + 1], reply[r + 2], reply[r + 3], reply[r + 4], reply[r + 5] = "w", p.ver, p.cr, rev_s, p.ct
    reply[r + 6], reply[r + 7], reply[r + 8], reply[r + 9], reply[r + 10] = now_s, p.x, size, vout, fout
    -- mr = rev and mt = now: the record's header has them
    -- itos: the entry's HSET below takes the same texts (formatted once, see itos)
    recs[i] = written_record(itos(p.ver), p.cr, p.ct, itos(p.x), itos(size))
    if vout ~= "" then
      vals[#vals + 1] = i
      vals[#vals + 1] = vout
      vals[#vals + 1] = fout
    end
  elseif st == "a" or (st == "c" and not cur) then
    out = { st, 0, 0, 0, 0, 0, 0, 0, "", "" }
  elseif st == "c" then
    out = { "c", cur.ver, cur.cr, cur.mr, cur.ct, cur.mt, cur.x, #cur.v, "", "" }
  else -- "d" or "t"
    local etype = st == "d" and "delete" or "touch"
    local c = call_tag
    call_tag = nil
    if c == etype then c = nil end
    event(etype, p.name, cur.ver, nil, nil, c)
    out = { st, cur.ver, cur.cr, cur.mr, cur.ct, cur.mt, st == "t" and p.x or cur.x, #cur.v, "", "" }
  end
  if out then
    local r = #reply
    for j = 1, 10 do reply[r + j] = out[j] end
    recs[i] = string.format("%s %d %s %s %s %s %d %d", out[1], out[2], out[3], out[4],
      out[5], out[6], out[7], out[8]) -- (3-6: an entry's revisions and times are text)
  end
end

-- 2b: the writes. First the bookkeeping that can still be refused, writing nothing when
-- it is (commit_write: the op id's purge index, the stats counter, the events), with the
-- amortized purge of op records past the dedupe window.
commit_write(op_id, now_s, action, stream_maxlen, rev, agent, now, events_cap, dedupe_ms)
-- Key and byte counters change by these deltas; one HSET of rev, n and b at the end
-- replaces an HINCRBY per item (drop_entry's own HINCRBYs are overwritten by it: the
-- absolute values below account for them, and nothing else runs in between).
local d_keys, d_bytes = 0, 0
for _, v in ipairs(victims) do
  drop_entry(v.name, v.ekey, v.hkey, v.size, keeps_order)
  d_keys, d_bytes = d_keys - 1, d_bytes - v.size
end
for i = 1, n_items do
  local p = plan[i]
  local cur = p.cur
  if p.expired then
    drop_entry(p.name, p.ekey, p.hkey, #p.expired.v, keeps_order)
    d_keys, d_bytes = d_keys - 1, d_bytes - #p.expired.v
  end
  if p.status == "d" then
    drop_entry(p.name, p.ekey, p.hkey, #cur.v, keeps_order)
    d_keys, d_bytes = d_keys - 1, d_bytes - #cur.v
  elseif p.status == "t" then
    redis.call("HSET", p.ekey, "m", entry_meta(itos(cur.ver), cur.cr, cur.mr, cur.ct, cur.mt, itos(p.x), cur.by, cur.f))
    drop_legacy_fields(cur)
    redis.call("ZADD", K_EXP, p.x, p.name)
  elseif p.status == "w" then
    if cur then
      if history_depth > 0 then keep_history(p.hkey, cur, history_depth) end
    else
      redis.call("ZADD", K_IDX, 0, p.name)
      d_keys = d_keys + 1
    end
    redis.call("HSET", p.ekey, "v", p.value, "m", entry_meta(itos(p.ver), p.cr, rev_s, p.ct, now_s, itos(p.x), agent, p.fmt))
    if cur and cur.legacy then drop_legacy_fields(cur) end
    -- Lease ties: an ephemeral write (re)binds the entry to this agent's lease; a plain
    -- put/create makes it permanent again. Counters and touches keep what they had.
    local old_owner = cur and cur.eo
    if eph_ms and (p.op == "P" or p.op == "S") then
      if old_owner and old_owner ~= agent then redis.call("ZREM", K_EPH, eph_member(old_owner, "k", p.name)) end
      redis.call("HSET", p.ekey, "eo", agent)
      redis.call("ZADD", K_EPH, 0, eph_member(agent, "k", p.name))
    elseif old_owner and (p.op == "P" or p.op == "S") then
      redis.call("HDEL", p.ekey, "eo")
      redis.call("ZREM", K_EPH, eph_member(old_owner, "k", p.name))
    end
    d_bytes = d_bytes + #p.value - (cur and #cur.v or 0)
    if keeps_order then redis.call("ZADD", K_LRU, rev_s, p.name) end
    if p.x > 0 then redis.call("ZADD", K_EXP, p.x, p.name) elseif cur and cur.x > 0 then
      redis.call("ZREM", K_EXP, p.name)
    end
  end
end
if changed then
  if drops or d_keys ~= 0 or d_bytes ~= 0 then
    redis.call("HSET", K_META, "rev", rev_s, "n", itos(n_keys + d_keys), "b", itos(n_bytes + d_bytes))
  else -- (a write that replaced values by ones of the same size: the counts are as stored)
    redis.call("HSET", K_META, "rev", rev_s)
  end
end
if eph_ms then
  local lease = redis.call("ZSCORE", K_LEASE, agent)
  if not lease or tonumber(lease) <= now then redis.call("ZADD", K_LEASE, now + eph_ms, agent) end
end

if #evicted > 0 then redis.call("HINCRBY", K_STATS, "evicted", #evicted) end

reply[#reply + 1] = #evicted
for j = 1, #evicted do reply[#reply + 1] = evicted[j] end

-- The op record (decision 6): record_head, the items' parts, then the values and evicted
-- names packed. A replay rebuilds the first reply from it.
local n_vals = #vals / 3
for j = 1, #evicted do vals[#vals + 1] = evicted[j] end
local record = record_head(digest, rev_s, now_s, itos(n_items) .. " " .. itos(#evicted) .. " " .. itos(n_vals))
  .. (n_items == 1 and recs[1] or table.concat(recs, "|")) .. "|"
if #vals == 3 then -- (one value: an incr's or a merge's result, the common case)
  record = record .. one_value_packed(itos(vals[1]), vals[2], vals[3])
elseif #vals > 0 then
  record = record .. pack(vals)
end
redis.call("HSET", K_OPS, op_id, record) -- its purge index has it already (2b)
return reply
