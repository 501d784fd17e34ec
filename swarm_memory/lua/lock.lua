--! keys: meta acl stats events audit ops opst bell lease eph locks lockh lbell
--! args: agent audit_maxlen stream_maxlen action +args
--! returns: {"ok", ...} | {"not_owned", holder} | {"nons"} | {"denied", granted}
--
-- Leases with fencing tokens (DESIGN.md decision 7), one lock per (namespace, name). The
-- acquire and the release, the calls every lock makes, are scripts of their own
-- (acquire.lua, release.lua: fewer names a call); the rest are here:
--   extend  name owner ttl_ms                (write) -> {"ok", expires_ms}
--   force   name                             (admin) -> {"ok", holders_removed}
--   list    limit                            (read)  -> {"ok", now_ms, name, record, ...}
--   beat    ttl_ms                           (read)  -> {"ok", expires_ms}  the agent's lease here
--   leave                                    (read)  -> {"ok"}  the agent's lease ends now
-- A force (like a release) rings K_LBELL with the lock's name, so waiters wake at once;
-- waiters also poll, so a lost doorbell only delays them.
local agent, default_audit_maxlen = ARGV[1], int_arg(ARGV[2], "audit_maxlen")
local stream_maxlen, action = int_arg(ARGV[3], "stream_maxlen"), ARGV[4]
-- The level each action needs and the name a denial is audited under: an if-chain, not a
-- table and a concatenation built on every call. (access_refused: one HMGET of the ACL
-- hash; the namespace's stored audit limit is read when a denial is recorded, this
-- caller's is the fallback.)
local needed, audited
if action == "extend" then needed, audited = LEVEL_RANK.write, "lock_extend"
elseif action == "force" then needed, audited = LEVEL_RANK.admin, "lock_force"
elseif action == "list" then needed, audited = LEVEL_RANK.read, "lock_list"
elseif action == "beat" then needed, audited = LEVEL_RANK.read, "lock_beat"
elseif action == "leave" then needed, audited = LEVEL_RANK.read, "lock_leave"
else error("swarm_memory: unknown lock action " .. tostring(action)) end
local refused = access_refused(agent, needed, audited, ARGV[5], default_audit_maxlen)
if refused then return refused end
local now = now_ms()

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
    -- (each hold's tie, and an older client's tie of the agent and lock: no hold is left)
    for _, h in ipairs(rec.holders) do
      redis.call("ZREM", K_EPH, lock_tie(h.agent, name, itos(h.token)), eph_member(h.agent, "l", name))
    end
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
