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
  local listed = op_index_listed()
  require_stream_room(K_AUDIT)
  require_counters(K_STATS, "broadcast")
  local rev = stored_num(read_call("HGET", K_META, "rev") or "0", K_META, "rev") + 1
  event("broadcast", "", 0, value, fmt)
  publish_events(stream_maxlen, rev, agent, now, nil, true) -- the first write (guarded)
  redis.call("HSET", K_META, "rev", rev)
  redis.call("HINCRBY", K_STATS, "broadcast", 1)
  audit(audit_maxlen, agent, "broadcast", "", op_id, "ok", rev)
  -- The op record and its index, after the amortized purge of records past the window
  -- (record_op, as a write's: on every 8th revision). Recorded without it before stop 23,
  -- a namespace only broadcasts used kept every broadcast's record.
  record_op(op_id, rev, rev, now, dedupe_ms, listed)
  return { "ok", rev }
elseif action == "audit" then
  -- Two sources, merged newest first (DESIGN.md decision 2, revised): the audit stream
  -- (denials, admin changes, force releases, broadcasts) and the feed, where a successful
  -- write's record is its revision's first put/delete/touch event (its "c" field names
  -- the call when the type does not; "ns_*" marks a purge the audit stream has). Each
  -- source is scanned newest first, filtered here, at most 20 x limit entries.
  local since, upto = ARGV[6], ARGV[7]
  local who, what, limit = ARGV[8], ARGV[9], int_arg(ARGV[10], "limit")
  local lo = since == "-" and -1 or int_arg(since, "since")
  local hi = upto == "+" and math.huge or int_arg(upto, "until")
  local out, cursor, scanned = {}, upto, 0
  while #out < limit and scanned < 20 * limit do
    local batch = read_call("XREVRANGE", K_AUDIT, cursor, since, "COUNT", 256)
    if #batch == 0 then break end
    for _, entry in ipairs(batch) do
      scanned = scanned + 1
      local f = {}
      for j = 1, #entry[2], 2 do f[entry[2][j]] = entry[2][j + 1] end
      if (who == "" or f.a == who) and (what == "" or f.act == what) and #out < limit then
        local r = stored_int(f.r) or 0
        -- a denial sorts right after the revision it came after ("rv"), if it says
        if r == 0 then r = (stored_int(f.rv) or math.huge) + 0.5 end
        out[#out + 1] = { entry, stored_int(string.match(entry[1], "^(%d+)")) or 0, r }
      end
    end
    if #batch < 256 then break end
    cursor = "(" .. batch[#batch][1]
  end
  -- Revisions the audit stream already shows (a purge; records of writes from before
  -- writes were read from the feed) are not shown twice.
  local audited = {}
  for _, o in ipairs(out) do audited[o[3]] = true end
  local WRITES = { put = true, delete = true, touch = true }
  local pick, pick_rev, stop = nil, nil, false
  local function take() -- the revision just scanned, as an audit entry
    if not pick then return end
    local f, ms = pick, stored_int(pick.ms)
    pick = nil
    local act = f.c or f.t
    if not ms or not f.a or string.sub(act, 1, 3) == "ns_" or audited[pick_rev] then return end
    if ms < lo then stop = true return end
    if ms > hi or (who ~= "" and f.a ~= who) or (what ~= "" and act ~= what) then return end
    out[#out + 1] = { { itos(ms) .. "-0", { "a", f.a, "act", act, "k", f.k or "", "op", "",
      "out", "ok", "r", itos(pick_rev) } }, ms, pick_rev }
  end
  cursor, scanned = "+", 0
  local found = 0
  while not stop and found < limit and scanned < 20 * limit do
    local batch = read_call("XREVRANGE", K_EVENTS, cursor, "-", "COUNT", 256)
    if #batch == 0 then break end
    local rev = pick_rev
    for _, entry in ipairs(batch) do
      scanned = scanned + 1
      local r = stored_int(string.match(entry[1], "^(%d+)%-"))
      if r ~= rev then
        local before = #out
        take()
        if #out > before then found = found + 1 end
        rev = r
      end
      local f = {}
      for j = 1, #entry[2] - 1, 2 do f[entry[2][j]] = entry[2][j + 1] end
      -- scanned backwards: the last write event seen is the revision's first
      if r and WRITES[f.t] then pick, pick_rev = f, r end
      if stop or found >= limit then break end
    end
    if #batch < 256 or stop or found >= limit then break end
    cursor = "(" .. batch[#batch][1]
  end
  if not stop and found < limit then take() end
  -- Newest first; within one millisecond by revision (a denial right after the revision
  -- it saw); the audit stream's own order otherwise.
  for i, o in ipairs(out) do o[4] = i end
  table.sort(out, function(a, b)
    if a[2] ~= b[2] then return a[2] > b[2] end
    if a[3] ~= b[3] then return a[3] > b[3] end
    return a[4] < b[4]
  end)
  local reply = {}
  for i = 1, math.min(limit, #out) do reply[i] = out[i][1] end
  return { "ok", 0, reply }
end
error("swarm_memory: unknown events action " .. tostring(action))
