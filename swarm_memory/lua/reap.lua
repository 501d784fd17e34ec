--! keys: meta acl stats idx lru exp events audit ops opst bell lease eph locks lockh lbell +items(entry hist)
--! args: agent audit_maxlen stream_maxlen batch dead +items(key)
--! returns: {"ok", removed, lost, next_dead, key...} | {"nons"} | {"denied", granted}
--
-- The lease reaper, the sweeper's second half: an agent whose lease in this namespace ran
-- out loses what it tied to it — ephemeral entries ("expire" events) and lock holds
-- ("unlock" events) — and then an "agent_lost" event says it is gone. Entry names cannot
-- be built in Lua, so each call returns the next dead agent and its ephemeral keys for the
-- caller to pass back; everything is re-checked here (the agent may have renewed since).
local agent, audit_maxlen = ARGV[1], int_arg(ARGV[2], "audit_maxlen")
local stream_maxlen, batch, dead = int_arg(ARGV[3], "stream_maxlen"), int_arg(ARGV[4], "batch"), ARGV[5]
local meta = load_meta()
if not meta then return { "nons" } end
audit_maxlen = stored_limit(meta[3], audit_maxlen) -- the namespace's retention
local denied = deny_reply(agent, meta[2], LEVEL_RANK.read, "sweep", nil, audit_maxlen)
if denied then return denied end
local now = now_ms()

local function lease_over(who)
  local lease = read_call("ZSCORE", K_LEASE, who)
  return lease and tonumber(lease) <= now
end

local function members(who, kind, n)
  local lo = "[" .. eph_member(who, kind, "")
  return read_call("ZRANGEBYLEX", K_EPH, lo, lo .. "\255", "LIMIT", 0, n)
end

local removed, lost, rev = 0, 0, nil
local function revision()
  if not rev then rev = redis.call("HINCRBY", K_META, "rev", 1) end
  return rev
end

if dead ~= "" and lease_over(dead) then
  -- Everything is read, and every key written below checked, before the first write.
  local held = {}
  for j = 1, (#KEYS - N_FIXED) / 2 do
    local cur, _, stale = read_entry(KEYS[N_FIXED + 2 * j - 1], now)
    held[j] = cur or stale or false
  end
  -- The agent's lock ties: since stop 39 one a hold, "<lock>\0<token>" after the agent's
  -- prefix (lock_tie), which ends that hold alone; an older client's names the lock
  -- alone and ends every hold of the agent there but one this version took without a
  -- lease (its owner id ends ":n": _ops/coord.py UNLEASED), which no tie is for. Two
  -- ties may name one lock (two holds): its record is read once and written once (a
  -- second copy read before the first write would put the first dropped hold back).
  local locks = members(dead, "l", batch)
  local lock_names, lock_recs, lock_drop = {}, {}, {}
  for _, m in ipairs(locks) do
    local rest = string.sub(m, #dead + 3)
    local sep = string.find(rest, "\0", 1, true)
    local name = sep and string.sub(rest, 1, sep - 1) or rest
    local drop = lock_drop[name]
    if not drop then
      lock_names[#lock_names + 1] = name
      lock_recs[name] = read_lock(name, now)
      drop = {}
      lock_drop[name] = drop
    end
    if not sep then
      lock_drop[name] = true -- (every hold of the agent but an unleased one)
    elseif drop ~= true then
      -- (a token that is no integer names no hold: the tie goes, and nothing else)
      local token = stored_int(string.sub(rest, sep + 1))
      if token then drop[token] = true end
    end
  end
  require_kinds({ K_IDX, "zset", K_LRU, "zset", K_EXP, "zset", K_STATS, "hash", K_LOCKS, "zset" })
  require_counters(K_STATS, "lease_expired", "agents_lost")
  require_counters(K_META, "n", "b") -- drop_entry adjusts them
  require_next_revision_room()
  for j = 1, (#KEYS - N_FIXED) / 2 do
    local name = ARGV[5 + j]
    local ekey, hkey = KEYS[N_FIXED + 2 * j - 1], KEYS[N_FIXED + 2 * j]
    local e = held[j]
    if e and e.eo == dead then
      revision()
      drop_entry(name, ekey, hkey, #e.v)
      event("expire", name, e.ver)
      removed = removed + 1
    else
      redis.call("ZREM", K_EPH, eph_member(dead, "k", name)) -- stale membership
    end
  end
  for _, name in ipairs(lock_names) do
    local rec, drop = lock_recs[name], lock_drop[name]
    local kept, dropped = {}, false
    for _, h in ipairs(rec.holders) do
      local hit = h.agent == dead
      if hit then
        if drop == true then hit = string.sub(h.owner, -2) ~= ":n" else hit = drop[h.token] end
      end
      if hit then dropped = true else kept[#kept + 1] = h end
    end
    if dropped then
      rec.holders = kept
      write_lock(name, rec)
      revision()
      event("unlock", name, 0)
      redis.call("SPUBLISH", K_LBELL, name)
    end
  end
  for _, m in ipairs(locks) do redis.call("ZREM", K_EPH, m) end
  if #members(dead, "", 1) == 0 then
    redis.call("ZREM", K_LEASE, dead)
    revision()
    event("agent_lost")
    lost = 1
  end
  if rev then
    -- The events of this revision are the dead agent's doing: it is their agent.
    publish_events(stream_maxlen, rev, dead, now)
    redis.call("HINCRBY", K_STATS, "lease_expired", removed)
    if lost == 1 then redis.call("HINCRBY", K_STATS, "agents_lost", 1) end
  end
end

local reply = { "ok", removed, lost }
local nxt = redis.call("ZRANGEBYSCORE", K_LEASE, "-inf", now, "LIMIT", 0, 1)[1]
if not nxt then
  reply[#reply + 1] = ""
  return reply
end
reply[#reply + 1] = nxt
local prefix = #nxt + 3
for _, m in ipairs(members(nxt, "k", batch)) do reply[#reply + 1] = string.sub(m, prefix) end
return reply
