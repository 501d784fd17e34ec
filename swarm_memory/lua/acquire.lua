--! keys: meta acl stats audit lease eph locks lockh
--! args: agent audit_maxlen name owner ttl_ms mode lease_ms
--! returns: {"ok", token, expires_ms, now_ms} | {"held", holder, expires_ms, now_ms, latest} | {"nons"} | {"denied", granted}
-- A new hold's "ok" goes packed, "ok <token> <expires_ms> <now_ms>" (one string: Redis
-- converts a table reply at ~6.5k instructions, a string at ~0.4k; _ops/replies.py).
--
-- A lock's acquire (DESIGN.md decision 7; the lock's other actions are lock.lua's), in a
-- script of its own since stop 23: the eight names an acquire uses and no action or feed
-- argument (each name a call passes costs the server ~1.2k instructions: 13 names and 10
-- arguments cost an empty function 25.8k, 8 and 8 cost 18.7k; docs/performance.md).
--   name owner ttl_ms mode lease_ms (write) -> {"ok", token, expires_ms, now_ms}
--     mode "x" exclusive / "s" shared; lease_ms ties the hold to the agent's lease in
--     this namespace ("" = no tie). Re-acquiring with the same owner id (a retry whose
--     reply was lost) returns the same token. A lock held by others -> {"held", ...}.
local agent, default_audit_maxlen = ARGV[1], int_arg(ARGV[2], "audit_maxlen")
-- (access_refused: one HMGET of the ACL hash; the namespace's stored audit limit is read
-- when a denial is recorded, this caller's is the fallback)
local refused = access_refused(agent, LEVEL_RANK.write, "lock_acquire", ARGV[3], default_audit_maxlen)
if refused then return refused end
local now = now_ms()
local name, owner = lock_name(ARGV[3]), ARGV[4]
local ttl_ms, mode, lease_ms = int_arg(ARGV[5], "ttl_ms"), ARGV[6], opt_int(ARGV[7], "lease_ms")
if mode ~= "x" and mode ~= "s" then error("swarm_memory: bad lock mode " .. tostring(mode)) end
-- Written below, checked first (K_LOCKS and K_LOCKH are read before any write; K_META
-- where the counter is still there).
if lease_ms then
  require_kinds({ K_EPH, "zset", K_LEASE, "zset" })
end
-- The lock's record and the fencing counter in one read (_lib.lua, LOCK_COUNTER).
local got = redis.pcall("HMGET", K_LOCKH, name, LOCK_COUNTER)
if got.err then corrupt(K_LOCKH, "holds the wrong type for HMGET") end
-- A lock with no record (free, the common acquire) is taken without a record table: its
-- new record is written from the call's values below (~5k instructions a pair less).
local rec, busy = nil, false
if got[1] then
  rec = read_lock_text(got[1], now)
  local mine = lock_holder(rec, owner)
  if mine then
    local h = rec.holders[mine]
    return { "ok", h.token, h.x, now }
  end
  busy = #rec.holders > 0 and not (mode == "s" and rec.mode == "s")
end
local token
if not busy then
  local stored, counter_key = got[2], K_LOCKH
  if not stored then
    -- No counter beside the records yet: a namespace's first acquire since stop 34 (or
    -- since its create, which sets meta "lt"). The counter is then meta's, once.
    stored, counter_key = redis.pcall("HGET", K_META, "lt"), K_META -- (read_call's check, inline)
    if type(stored) == "table" then corrupt(K_META, "holds the wrong type for HGET") end
  end
  local last = 0
  if stored then
    -- (stored_int: the text the last acquire formatted is found in its memo, unparsed)
    last = stored_int(stored)
    if not last or last < 0 then corrupt(counter_key, "bad fencing token counter") end
  end
  -- A token is never issued twice, even when a crash or failover lost the counter's
  -- last increments (DESIGN.md decision 3): it is at least the server clock in
  -- microseconds, which every earlier token trails (each took a script run of more than
  -- 1 us), so a holder from a lost history never presents a token a new holder also got.
  token = now_us()
  if token <= last then token = last + 1 end
end
-- Records of leases that ran out, a few per acquire (never a growing table): upkeep
-- that stands on its own, done even if this call then fails.
prune_locks(now, 8)
-- The call's first own write, refused with nothing written when the stats hash or its
-- counter is corrupt (so no HMGET checks it first); nothing after it can be refused.
-- (Literal field names: tests/ops/test_stats_fields.py finds the counters by them.)
local counted
if busy then
  counted = redis.pcall("HINCRBY", K_STATS, "lock_busy", "1")
else
  counted = redis.pcall("HINCRBY", K_STATS, "lock_acquire", "1")
end
if type(counted) == "table" and counted.err then
  corrupt(K_STATS, "counter " .. (busy and "lock_busy" or "lock_acquire")
    .. " is not an integer, or the key not a hash")
end
if busy then return lock_busy(rec, now) end
local token_s, x = itos(token), now + ttl_ms
if rec then
  -- (the lapsed holders' ties go before this hold joins: a lapsed hold of this agent loses
  -- its tie, which this hold gets again below if it is taken with a lease)
  untie_lapsed(name, rec)
  rec.mode = mode
  rec.holders[#rec.holders + 1] = { owner = owner, agent = agent, x = x, token = token }
  write_lock(name, rec, token_s) -- (the record and the counter: one HSET)
else
  -- (write_lock's work for a record of this one holder: write_lock_record's text)
  local x_s = itos(x)
  redis.call("HSET", K_LOCKH, name, lock_record_text(mode, owner, agent, x_s, token_s), LOCK_COUNTER, token_s)
  redis.call("ZADD", K_LOCKS, x_s, name)
end
if lease_ms then
  redis.call("ZADD", K_EPH, 0, lock_tie(agent, name, token_s)) -- (this hold's own tie)
  local lease = redis.call("ZSCORE", K_LEASE, agent)
  if not lease or tonumber(lease) <= now then redis.call("ZADD", K_LEASE, now + lease_ms, agent) end
end
-- (the expiry's text is the record's, from itos's memo; only now's is formatted here)
return "ok " .. token_s .. " " .. itos(x) .. " " .. itos(now)
