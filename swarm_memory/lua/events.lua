--! keys: meta acl stats idx lru exp events audit ops opst bell lease eph locks lockh lbell
--! args: agent audit_maxlen stream_maxlen dedupe_ms action +args
--! returns: {"ok", rev, entries} | {"trimmed", first_id} | {"rewound", rev} | {"ok", rev} | {"dup", rev} | {"nons"} | {"denied", granted}
--
-- The change feed, the audit log and broadcasts (permission-checked like everything):
--   read  start count [prev_ms]  (read)  entries from stream id `start` on; "now" -> the
--                                 last one. {"trimmed", first} if `start` was trimmed away:
--                                 never a silent gap (DESIGN.md decision 5). {"rewound", rev}
--                                 if the history before `start` is not the one the reader
--                                 saw (DESIGN.md decision 3): `start` lies beyond the head,
--                                 or the event right before it is not from `prev_ms` (the
--                                 time of the last event the reader got) -- a crash or a
--                                 failover lost revisions and new writes reused them.
--   broadcast op_id value fmt (write) an event of type "broadcast" carrying the value;
--                                 deduped by op id like every write.
--   audit since_ms upto_ms agent action limit (read) newest first, filtered here.
local agent, audit_maxlen = ARGV[1], int_arg(ARGV[2], "audit_maxlen")
local stream_maxlen, dedupe_ms = int_arg(ARGV[3], "stream_maxlen"), int_arg(ARGV[4], "dedupe_ms")
local action = ARGV[5]
local meta = load_meta()
if not meta then return { "nons" } end
-- The namespace's stored retention, not this caller's settings (older namespaces: ARGV).
audit_maxlen, dedupe_ms = stored_limit(meta[3], audit_maxlen), stored_limit(meta[4], dedupe_ms)
local needed = LEVEL_RANK.read
if action == "broadcast" then needed = LEVEL_RANK.write end
local denied = deny_reply(agent, meta[2], needed, action, nil, audit_maxlen)
if denied then return denied end

local function id_less(a, b)
  local ar, as = string.match(a, "^(%d+)%-(%d+)$")
  local br, bs = string.match(b, "^(%d+)%-(%d+)$")
  ar, as, br, bs = tonumber(ar), tonumber(as), tonumber(br), tonumber(bs)
  return ar < br or (ar == br and as < bs)
end

if action == "read" then
  local start, count = ARGV[6], int_arg(ARGV[7], "count")
  local rev = stored_num(redis.call("HGET", K_META, "rev"), K_META, "rev")
  if start == "now" then
    return { "ok", rev, read_call("XREVRANGE", K_EVENTS, "+", "-", "COUNT", 1) }
  end
  if not string.match(start, "^%d+%-%d+$") then error("swarm_memory: bad stream id " .. start) end
  local first = read_call("XRANGE", K_EVENTS, "-", "+", "COUNT", 1)[1]
  -- `start` is the exact id of the next event the reader needs (entries carry n, the
  -- event count of their revision, so readers never guess): older than the oldest entry
  -- kept means it was trimmed.
  if first and id_less(start, first[1]) then return { "trimmed", first[1] } end
  if tonumber(string.match(start, "^(%d+)")) > (rev or 0) + 1 then return { "rewound", rev } end
  local prev_ms = ARGV[8]
  if prev_ms and prev_ms ~= "" then
    local before = redis.call("XREVRANGE", K_EVENTS, "(" .. start, "-", "COUNT", 1)[1]
    if before then
      local fields, ms = before[2], nil
      for j = 1, math.min(#fields, 32), 2 do -- a bounded look for the time field
        if fields[j] == "ms" then ms = fields[j + 1] end
      end
      if ms ~= prev_ms then return { "rewound", rev } end
    end
  end
  -- The last element says whether expired entries await the sweeper: watchers run it,
  -- which bounds the delay of "expire" events by their poll interval.
  return { "ok", rev, redis.call("XRANGE", K_EVENTS, start, "+", "COUNT", count), sweep_due(now_ms()) }
elseif action == "broadcast" then
  local op_id, value, fmt = ARGV[6], ARGV[7], ARGV[8]
  local now = now_ms()
  local previous = read_call("HGET", K_OPS, op_id)
  if previous then
    -- A broadcast's record is its revision; anything else is another request's (the
    -- client says so: OpIdReused) or corrupt.
    return { "dup", stored_int(previous) or -1 }
  end
  require_kinds({ K_OPST, "zset" })
  require_stream_room(K_AUDIT)
  require_counters(K_STATS, "broadcast")
  local rev = stored_num(read_call("HGET", K_META, "rev") or "0", K_META, "rev") + 1
  event("broadcast", "", 0, value, fmt)
  publish_events(stream_maxlen, rev, agent, now, nil, true) -- the first write (guarded)
  redis.call("HSET", K_META, "rev", rev)
  redis.call("HINCRBY", K_STATS, "broadcast", 1)
  audit(audit_maxlen, agent, "broadcast", "", op_id, "ok", rev)
  redis.call("HSET", K_OPS, op_id, rev)
  redis.call("ZADD", K_OPST, now, op_id)
  return { "ok", rev }
elseif action == "audit" then
  local since, upto = ARGV[6], ARGV[7]
  local who, what, limit = ARGV[8], ARGV[9], int_arg(ARGV[10], "limit")
  local out, cursor, scanned = {}, upto, 0
  -- Filters run here so a narrow query does not ship the whole log; the scan is bounded.
  while #out < limit and scanned < 20 * limit do
    local batch = read_call("XREVRANGE", K_AUDIT, cursor, since, "COUNT", 256)
    if #batch == 0 then break end
    for _, entry in ipairs(batch) do
      scanned = scanned + 1
      local f = {}
      for j = 1, #entry[2], 2 do f[entry[2][j]] = entry[2][j + 1] end
      if (who == "" or f.a == who) and (what == "" or f.act == what) and #out < limit then
        out[#out + 1] = entry
      end
    end
    if #batch < 256 then break end
    cursor = "(" .. batch[#batch][1]
  end
  return { "ok", 0, out }
end
error("swarm_memory: unknown events action " .. tostring(action))
