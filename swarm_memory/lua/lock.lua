--! keys: meta acl stats events audit ops opst bell lease eph locks lockh lbell
--! args: agent audit_maxlen stream_maxlen action +args
--! returns: {"ok", ...} | {"held", holder, expires_ms, now_ms, latest} | {"not_owned", holder} | {"nons"} | {"denied", granted}
--
-- Leases with fencing tokens (DESIGN.md decision 7), one lock per (namespace, name):
--   acquire name owner ttl_ms mode lease_ms  (write) -> {"ok", token, expires_ms, now_ms}
--            mode "x" exclusive / "s" shared; lease_ms ties the hold to the agent's lease
--            in this namespace ("" = no tie). Re-acquiring with the same owner id (a
--            retry whose reply was lost) returns the same token.
--   release name owner op_id [x token]       (write) -> {"ok"}  (replays of op_id too)
--            x, token: the expiry and token the acquire or last extend returned (the
--            record, when it is exactly this owner's, is then read without parsing)
--   extend  name owner ttl_ms                (write) -> {"ok", expires_ms}
--   force   name                             (admin) -> {"ok", holders_removed}
--   list    limit                            (read)  -> {"ok", now_ms, name, record, ...}
--   beat    ttl_ms                           (read)  -> {"ok", expires_ms}  the agent's lease here
--   leave                                    (read)  -> {"ok"}  the agent's lease ends now
-- A release (and a force) rings K_LBELL with the lock's name, so waiters wake at once;
-- waiters also poll, so a lost doorbell only delays them.
local agent, default_audit_maxlen = ARGV[1], int_arg(ARGV[2], "audit_maxlen")
local stream_maxlen, action = int_arg(ARGV[3], "stream_maxlen"), ARGV[4]
-- The caller's level and the namespace's state from the ACL hash's marker (read_access:
-- one HMGET, where the meta state and default level and then the caller's level took
-- two reads); an acquire also reads the fencing-token counter ("lt").
local have = read_access(agent)
if not have then return { "nons" } end
-- (the namespace's stored audit limit is read when a record is added; this is the fallback)
-- The level each action needs and the name a denial is audited under: an if-chain, not a
-- table and a concatenation built on every call.
local needed, audited
if action == "acquire" then needed, audited = LEVEL_RANK.write, "lock_acquire"
elseif action == "release" then needed, audited = LEVEL_RANK.write, "lock_release"
elseif action == "extend" then needed, audited = LEVEL_RANK.write, "lock_extend"
elseif action == "force" then needed, audited = LEVEL_RANK.admin, "lock_force"
elseif action == "list" then needed, audited = LEVEL_RANK.read, "lock_list"
elseif action == "beat" then needed, audited = LEVEL_RANK.read, "lock_beat"
elseif action == "leave" then needed, audited = LEVEL_RANK.read, "lock_leave"
else error("swarm_memory: unknown lock action " .. tostring(action)) end
if have < needed then return denial(agent, have, audited, ARGV[5], nil, default_audit_maxlen) end
local now = now_ms()

if action == "acquire" then
  local name, owner = ARGV[5], ARGV[6]
  local ttl_ms, mode, lease_ms = int_arg(ARGV[7], "ttl_ms"), ARGV[8], opt_int(ARGV[9], "lease_ms")
  if mode ~= "x" and mode ~= "s" then error("swarm_memory: bad lock mode " .. tostring(mode)) end
  -- Written below, checked first (K_META, K_LOCKS and K_LOCKH are read before any write).
  if lease_ms then
    require_kinds({ K_EPH, "zset", K_LEASE, "zset" })
  end
  local rec = read_lock(name, now)
  local mine = lock_holder(rec, owner)
  if mine then
    local h = rec.holders[mine]
    return { "ok", h.token, h.x, now }
  end
  local busy = #rec.holders > 0 and not (mode == "s" and rec.mode == "s")
  local token
  if not busy then
    local stored = redis.pcall("HGET", K_META, "lt") -- (read_call's check, inline)
    if type(stored) == "table" then corrupt(K_META, "holds the wrong type for HGET") end
    local last = 0
    if stored then
      -- (stored_int: the text the last acquire formatted is found in its memo, unparsed)
      last = stored_int(stored)
      if not last or last < 0 then corrupt(K_META, "bad fencing token counter lt") end
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
  redis.call("HSET", K_META, "lt", itos(token))
  rec.mode = mode
  rec.holders[#rec.holders + 1] = { owner = owner, agent = agent, x = now + ttl_ms, token = token }
  write_lock(name, rec)
  if lease_ms then
    redis.call("ZADD", K_EPH, 0, eph_member(agent, "l", name))
    local lease = redis.call("ZSCORE", K_LEASE, agent)
    if not lease or tonumber(lease) <= now then redis.call("ZADD", K_LEASE, now + lease_ms, agent) end
  end
  return { "ok", token, now + ttl_ms, now }
end

if action == "release" then
  local name, owner, op_id, held_x, held_token = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
  -- The common release, without parsing the record (~25k instructions: each string
  -- library call of the parse costs ~1.5-3k): the client sends the expiry and token its
  -- acquire (or last extend) returned, so the record this owner holds alone is known
  -- in full; equal to the stored text, byte for byte, it is that record (the text is
  -- built as write_lock_record builds it). Anything else (another holder, a shared lock,
  -- an expired or corrupt record, an older client sending neither) takes the parse.
  local raw = redis.pcall("HGET", K_LOCKH, name)
  if type(raw) == "table" then corrupt(K_LOCKH, "holds the wrong type for HGET") end
  local rec, mine
  if raw and held_token then
    local P = PACK_PREFIX
    if raw == "1:x" .. (P[#owner] or pack_prefix(owner)) .. owner .. (P[#agent] or pack_prefix(agent))
      .. agent .. (P[#held_x] or pack_prefix(held_x)) .. held_x
      .. (P[#held_token] or pack_prefix(held_token)) .. held_token then
      local x = stored_int(held_x) -- (the text this library's acquire formatted: its memo)
      if x and x > now then rec, mine = { mode = "x", holders = {} }, 0 end
    end
  end
  if not rec then
    rec = read_lock_text(raw, now)
    mine = lock_holder(rec, owner)
  end
  if not mine then
    -- A replay (this op id released the lock already: its owner is gone from the record)
    -- or a lock this owner does not hold. Only here is the op record looked up: while the
    -- owner still holds the lock, its release has not run (a release removes the owner
    -- and records the op id in one call), which saves the common release an HGET.
    if read_call("HGET", K_OPS, op_id) then return { "ok" } end
    return lock_not_owned(rec)
  end
  -- The first writes, each refused with nothing written when its key is corrupt, the
  -- ones before it undone then (so no TYPE or HGET checks them first: ~25k instructions
  -- a release): the op record's purge index, the stats counter, the lease tie, the op
  -- record (HSETNX: an op record already there, which only corrupt data leaves, stays as
  -- it was), and the expiry index (K_LOCKS, last: its own undo would need its old score).
  -- Each of these but HINCRBY replies 0 or 1, anything else (a table) is a refusal:
  -- compared as numbers, with no type() call (a library call costs ~0.5k instructions).
  local member = eph_member(agent, "l", name)
  local now_s = itos(now)
  local indexed = index_op(op_id, now_s)
  local counted = redis.pcall("HINCRBY", K_STATS, "lock_release", "1")
  if type(counted) == "table" then
    unindex_op(op_id, indexed)
    corrupt(K_STATS, "counter lock_release is not an integer, or the key not a hash")
  end
  local untied = redis.pcall("ZREM", K_EPH, member)
  local recorded = (untied == 0 or untied == 1) and redis.pcall("HSETNX", K_OPS, op_id, "released")
  if mine > 0 then table.remove(rec.holders, mine) end
  local latest = 0
  local holders = rec.holders
  for j = 1, #holders do if holders[j].x > latest then latest = holders[j].x end end
  local unlisted = (recorded == 0 or recorded == 1) and (latest == 0
    and redis.pcall("ZREM", K_LOCKS, name) or redis.pcall("ZADD", K_LOCKS, itos(latest), name))
  if unlisted ~= 0 and unlisted ~= 1 then
    unindex_op(op_id, indexed)
    if counted == 1 then redis.call("HDEL", K_STATS, "lock_release") else
      redis.call("HINCRBY", K_STATS, "lock_release", "-1") end
    if untied ~= 0 and untied ~= 1 then corrupt(K_EPH, "holds the wrong type for ZREM") end
    if untied == 1 then redis.call("ZADD", K_EPH, "0", member) end
    if recorded ~= 0 and recorded ~= 1 then corrupt(K_OPS, "holds the wrong type for HSETNX") end
    if recorded == 1 then redis.call("HDEL", K_OPS, op_id) end
    corrupt(K_LOCKS, "holds the wrong type for " .. (latest == 0 and "ZREM" or "ZADD"))
  end
  op_indexed(op_id, now_s, indexed)
  if latest == 0 then
    redis.call("HDEL", K_LOCKH, name)
  else
    write_lock_record(name, rec)
  end
  redis.call("SPUBLISH", K_LBELL, name)
  return { "ok" }
end

if action == "extend" then
  local name, owner, ttl_ms = ARGV[5], ARGV[6], int_arg(ARGV[7], "ttl_ms")
  local rec = read_lock(name, now)
  local mine = lock_holder(rec, owner)
  if not mine then return lock_not_owned(rec) end
  require_kinds({ K_LOCKS, "zset" })
  rec.holders[mine].x = now + ttl_ms
  write_lock(name, rec)
  return { "ok", now + ttl_ms }
end

if action == "force" then
  local name = ARGV[5]
  local rec = read_lock(name, now)
  local n = #rec.holders
  if n > 0 then
    require_kinds({ K_LOCKS, "zset", K_EPH, "zset" })
    require_stream_room(K_AUDIT)
    require_next_revision_room()
    local audit_maxlen = stored_limit(read_call("HGET", K_META, "am"), default_audit_maxlen)
    for _, h in ipairs(rec.holders) do redis.call("ZREM", K_EPH, eph_member(h.agent, "l", name)) end
    rec.holders = {}
    write_lock(name, rec)
    local rev = redis.call("HINCRBY", K_META, "rev", 1)
    event("unlock", name, 0)
    publish_events(stream_maxlen, rev, agent, now)
    audit(audit_maxlen, agent, "lock_force", name, "", "ok", rev)
    redis.call("SPUBLISH", K_LBELL, name)
  end
  return { "ok", n }
end

if action == "list" then
  local limit = int_arg(ARGV[5], "limit")
  local reply = { "ok", now }
  for _, name in ipairs(read_call("ZRANGEBYSCORE", K_LOCKS, "(" .. now, "+inf", "LIMIT", 0, limit)) do
    reply[#reply + 1] = name
    reply[#reply + 1] = read_call("HGET", K_LOCKH, name) or ""
  end
  return reply
end

if action == "beat" then
  local ttl_ms = int_arg(ARGV[5], "ttl_ms")
  read_call("ZADD", K_LEASE, now + ttl_ms, agent) -- its only write: a wrong type writes nothing
  return { "ok", now + ttl_ms }
end

if action == "leave" then
  -- Only an agent that holds a lease here ends it; the sweeper then removes what it held.
  if read_call("ZSCORE", K_LEASE, agent) then redis.call("ZADD", K_LEASE, now, agent) end
  return { "ok" }
end
