"""The Lua scripts: every multi-key change is one script, so Redis applies it atomically.

Each script gets the key prefix as ``ARGV[1]`` and builds its keys from it (the layout is in
``docs/redis.md``); that is why the scripts declare no ``KEYS`` and are for a single Redis server,
not a cluster. ``PRELUDE`` holds the helpers they share: priority levels and deadlines on append,
dead-lettering, requeueing a pending entry with its delivery count, and reaping a dead connection.
"""

from __future__ import annotations

PRELUDE = r"""
local P = ARGV[1]
local G = 'g'
local function qkey(name) return P .. 'q:' .. name end
local function skey(name, level) return P .. 's:' .. name .. ':' .. level end
local function fmt(n) return string.format('%.0f', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- the server's run id: it changes when the server restarts (fakeredis has no INFO: '-')
local function epoch()
  local info = redis.pcall('INFO', 'server')
  if type(info) == 'string' then return string.match(info, 'run_id:(%w+)') or '-' end
  return '-'
end
local function split_tab(s)
  local i = string.find(s, '\t', 1, true)
  return string.sub(s, 1, i - 1), string.sub(s, i + 1)
end
local function as_map(flat)
  local map = {}
  for i = 1, #flat, 2 do map[flat[i]] = flat[i + 1] end
  return map
end
local function levels_of(name)
  return tonumber(redis.call('HGET', qkey(name), 'l') or '0')
end
local function not_found(what, name)
  return redis.error_reply('NOTFOUND ' .. what .. ' ' .. name ..
    ' does not exist; declare it first')
end
local function last_delivered(s)
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', s)) do
    local g = as_map(group)
    if g['name'] == G then return g['last-delivered-id'] end
  end
  return '0-0'
end
local function delete_queue(name)
  local meta = qkey(name)
  local l = levels_of(name)
  if l == 0 then return 0 end
  for i = 0, l - 1 do redis.call('DEL', skey(name, i)) end
  for _, b in ipairs(redis.call('SMEMBERS', P .. 'qb:' .. name)) do
    local ex, pat = split_tab(b)
    redis.call('SREM', P .. 'b:' .. ex, name .. '\t' .. pat)
  end
  local owner = redis.call('HGET', meta, 'own')
  if owner and owner ~= '' then redis.call('SREM', P .. 'own:' .. owner, name) end
  redis.call('DEL', P .. 'qb:' .. name, meta)
  return 1
end
-- append an entry to a queue at its priority level, with the deadline its TTL gives it
local queue_info = {}
local function push(name, fields, ttl, priority, now)
  local info = queue_info[name]
  if not info then
    local meta = redis.call('HMGET', qkey(name), 'l', 'ttl')
    info = {tonumber(meta[1]), tonumber(meta[2])}
    queue_info[name] = info
  end
  local level = 0
  if info[1] > 1 and priority then level = math.max(0, math.min(priority, info[1] - 1)) end
  if info[2] and (not ttl or info[2] < ttl) then ttl = info[2] end
  if ttl then
    fields[#fields + 1] = 'e'
    fields[#fields + 1] = fmt(now + ttl)
    redis.call('HSET', qkey(name), 'tt', '1')
  end
  redis.call('XADD', skey(name, level), '*', unpack(fields))
end
local function dead_letter(name, fields, reason, now)
  local dl = redis.call('HGET', qkey(name), 'dl')
  if not dl or dl == '' or levels_of(dl) == 0 then return end
  local copy, priority, first = {}, nil, nil
  for i = 1, #fields, 2 do
    local f = fields[i]
    if f == 'dt' then first = fields[i + 1] end
    if f ~= 'e' and f ~= 'dc' and f ~= 'dr' and f ~= 'dq' and f ~= 'dt' then
      copy[#copy + 1] = f
      copy[#copy + 1] = fields[i + 1]
      if f == 'pr' then priority = tonumber(fields[i + 1]) end
    end
  end
  copy[#copy + 1] = 'dr'
  copy[#copy + 1] = reason
  copy[#copy + 1] = 'dq'
  copy[#copy + 1] = name
  copy[#copy + 1] = 'dt'
  copy[#copy + 1] = first or fmt(now)
  push(dl, copy, nil, priority, now)
end
-- put a pending entry back at the end of its stream, counting the deliveries it had
local function requeue(s, id, deliveries)
  local entry = redis.call('XRANGE', s, id, id)[1]
  redis.call('XACK', s, G, id)
  redis.call('XDEL', s, id)
  if not entry then return end
  local fields, copy, count = entry[2], {}, 0
  for i = 1, #fields, 2 do
    if fields[i] == 'dc' then
      count = tonumber(fields[i + 1])
    else
      copy[#copy + 1] = fields[i]
      copy[#copy + 1] = fields[i + 1]
    end
  end
  copy[#copy + 1] = 'dc'
  copy[#copy + 1] = fmt(count + deliveries)
  redis.call('XADD', s, '*', unpack(copy))
end
-- requeue what one consumer holds (except the ids in keep); forget the consumer if nothing stays
local function release_consumer(s, consumer, pending, keep)
  local kept = 0
  if pending > 0 then
    for _, p in ipairs(redis.call('XPENDING', s, G, '-', '+', pending, consumer)) do
      if keep[p[1]] then kept = kept + 1 else requeue(s, p[1], tonumber(p[4])) end
    end
  end
  if kept == 0 then redis.call('XGROUP', 'DELCONSUMER', s, G, consumer) end
end
-- a connection is gone: requeue what its consumers held, delete the queues it owned
local function reap_conn(conn)
  local prefix = conn .. '/'
  for _, q in ipairs(redis.call('SMEMBERS', P .. 'cq:' .. conn)) do
    for level = 0, levels_of(q) - 1 do
      local s = skey(q, level)
      for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', s, G)) do
        local info = as_map(c)
        if string.sub(info['name'], 1, #prefix) == prefix then
          release_consumer(s, info['name'], tonumber(info['pending']), {})
        end
      end
    end
  end
  for _, q in ipairs(redis.call('SMEMBERS', P .. 'own:' .. conn)) do delete_queue(q) end
  redis.call('DEL', P .. 'cq:' .. conn, P .. 'own:' .. conn)
  redis.call('ZREM', P .. 'conns', conn)
end
"""

# ARGV: prefix, conn, liveness ms. Refresh this connection's deadline; reap connections past
# theirs. Returns {1 if this connection was still registered, the server's epoch, its time in ms}.
HEARTBEAT = r"""
local conn, ttl = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local known = redis.call('ZSCORE', P .. 'conns', conn)
redis.call('ZADD', P .. 'conns', fmt(now + ttl), conn)
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', P .. 'conns', '-inf', now, 'LIMIT', 0, 16)) do
  reap_conn(dead)
end
return {known and 1 or 0, epoch(), fmt(now)}
"""

# ARGV: prefix, conn. A clean goodbye: the same as being reaped.
RELEASE = r"""
reap_conn(ARGV[2])
return 1
"""

# ARGV: prefix, conn, name, options (JSON), levels, dead letter, ttl ms, exclusive, owned, durable
DECLARE_QUEUE = r"""
local conn, name = ARGV[2], ARGV[3]
local meta = qkey(name)
local ep = epoch()
if redis.call('EXISTS', meta) == 1 then
  local cur = redis.call('HMGET', meta, 'o', 'ep', 'own', 'x')
  if cur[2] and cur[2] ~= '' and cur[2] ~= ep then
    delete_queue(name)  -- a non-durable queue from before a server restart
  else
    if cur[4] == '1' and cur[3] ~= conn then
      return redis.error_reply('CONFLICT queue ' .. name ..
        ' is exclusive to another connection; choose another name')
    end
    if cur[1] ~= ARGV[4] then  -- the options as JSON: Python says which of them differ
      return redis.error_reply('CONFLICT queue\t' .. name .. '\t' .. cur[1] .. '\t' .. ARGV[4])
    end
    return 0
  end
end
local own, qep = '', ''
if ARGV[9] == '1' then
  own = conn
  redis.call('SADD', P .. 'own:' .. conn, name)
end
if ARGV[10] ~= '1' then qep = ep end
redis.call('HSET', meta, 'o', ARGV[4], 'l', ARGV[5], 'dl', ARGV[6], 'ttl', ARGV[7], 'x', ARGV[8],
  'own', own, 'ep', qep, 'tt', '0')
for i = 0, tonumber(ARGV[5]) - 1 do
  redis.call('DEL', skey(name, i))
  redis.call('XGROUP', 'CREATE', skey(name, i), G, '0', 'MKSTREAM')
end
return 1
"""

# ARGV: prefix, name
DELETE_QUEUE = r"""
return delete_queue(ARGV[2])
"""

# ARGV: prefix, name, kind, durable
DECLARE_EXCHANGE = r"""
local key = P .. 'x:' .. ARGV[2]
local cur = redis.call('HMGET', key, 'k', 'd')
if cur[1] then
  if cur[1] ~= ARGV[3] or cur[2] ~= ARGV[4] then
    local function described(kind, durable)
      return '{"kind": "' .. kind .. '", "durable": ' .. string.lower(durable) .. '}'
    end
    return redis.error_reply('CONFLICT exchange\t' .. ARGV[2] .. '\t' ..
      described(cur[1], cur[2]) .. '\t' .. described(ARGV[3], ARGV[4]))
  end
  return 0
end
redis.call('HSET', key, 'k', ARGV[3], 'd', ARGV[4])
return 1
"""

# ARGV: prefix, name
DELETE_EXCHANGE = r"""
local name = ARGV[2]
for _, b in ipairs(redis.call('SMEMBERS', P .. 'b:' .. name)) do
  local q, pat = split_tab(b)
  redis.call('SREM', P .. 'qb:' .. q, name .. '\t' .. pat)
end
redis.call('DEL', P .. 'b:' .. name, P .. 'x:' .. name)
return 1
"""

# ARGV: prefix, queue, exchange, key, bind ('1') or unbind ('0')
BIND = r"""
local q, ex, key = ARGV[2], ARGV[3], ARGV[4]
if ARGV[5] == '0' then
  redis.call('SREM', P .. 'b:' .. ex, q .. '\t' .. key)
  redis.call('SREM', P .. 'qb:' .. q, ex .. '\t' .. key)
  return 1
end
if redis.call('EXISTS', qkey(q)) == 0 then return not_found('queue', q) end
if redis.call('EXISTS', P .. 'x:' .. ex) == 0 then return not_found('exchange', ex) end
redis.call('SADD', P .. 'b:' .. ex, q .. '\t' .. key)
redis.call('SADD', P .. 'qb:' .. q, ex .. '\t' .. key)
return 1
"""

# ARGV: prefix, exchange, key, mandatory, then (body, properties, ttl ms, priority) per message.
# Routes once, appends every message to every matching queue; returns how many queues matched.
PUBLISH = r"""
local function words(s)
  local out = {}
  if s == '' then return out end
  local start = 1
  while true do
    local i = string.find(s, '.', start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end
-- RabbitMQ's topic rule, the same dynamic programme as polybus.core.topic
local function topic_matches(pattern, w)
  local n = #w
  local reach = {[0] = true}
  for j = 1, n do reach[j] = false end
  for _, part in ipairs(words(pattern)) do
    if part == '#' then
      for j = 1, n do reach[j] = reach[j] or reach[j - 1] end
    else
      for j = n, 1, -1 do reach[j] = reach[j - 1] and (part == '*' or part == w[j]) end
      reach[0] = false
    end
  end
  return reach[n]
end
local ex, key = ARGV[2], ARGV[3]
local targets = {}
if ex == '' then
  if redis.call('EXISTS', qkey(key)) == 1 then targets[1] = key end
else
  local kind = redis.call('HGET', P .. 'x:' .. ex, 'k')
  if not kind then return not_found('exchange', ex) end
  local seen, w = {}, words(key)
  for _, b in ipairs(redis.call('SMEMBERS', P .. 'b:' .. ex)) do
    local q, pat = split_tab(b)
    if not seen[q] and (kind == 'fanout' or (kind == 'direct' and pat == key)
        or (kind == 'topic' and topic_matches(pat, w))) then
      seen[q] = true
      targets[#targets + 1] = q
    end
  end
  table.sort(targets)
end
if #targets == 0 then
  if ARGV[4] == '1' then
    return redis.error_reply('UNROUTABLE no queue is bound to exchange ' .. ex .. ' for key ' ..
      key .. '; the message was not delivered')
  end
  return 0
end
local now = now_ms()
for _, q in ipairs(targets) do
  for i = 5, #ARGV, 4 do
    local fields = {'b', ARGV[i], 'm', ARGV[i + 1], 'x', ex, 'k', key}
    local priority = tonumber(ARGV[i + 3])
    if priority then
      fields[9] = 'pr'
      fields[10] = ARGV[i + 3]
    end
    push(q, fields, tonumber(ARGV[i + 2]), priority, now)
  end
end
return #targets
"""

# ARGV: prefix, conn, queue. Registers the queue as consumed by the connection (for reaping);
# returns its priority levels.
CONSUME = r"""
local l = levels_of(ARGV[3])
if l == 0 then return not_found('queue', ARGV[3]) end
redis.call('SADD', P .. 'cq:' .. ARGV[2], ARGV[3])
return l
"""

# ARGV: prefix, queue, consumer, count, noack. Up to count new entries, highest priority first;
# expired ones are dead-lettered instead. Returns {{level, id, fields}*, tails}: tails (the last
# ids of the streams, to block on) only when fewer than count were found.
FETCH = r"""
local name, consumer, want, noack = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
local l = levels_of(name)
if l == 0 then return not_found('queue', name) end
-- XREADGROUP's entries for one stream (fakeredis leaves out the outer list)
local function entries_of(res)
  if not res or res[1] == nil then return {} end
  if type(res[1]) == 'table' then return res[1][2] end
  return res[2]
end
local out, now = {}, nil
for level = l - 1, 0, -1 do
  local s = skey(name, level)
  while want > 0 do
    local res
    if noack then
      res = redis.call('XREADGROUP', 'GROUP', G, consumer, 'COUNT', want, 'NOACK',
        'STREAMS', s, '>')
    else
      res = redis.call('XREADGROUP', 'GROUP', G, consumer, 'COUNT', want, 'STREAMS', s, '>')
    end
    local entries = entries_of(res)
    if #entries == 0 then break end
    for _, e in ipairs(entries) do
      local id, fields = e[1], e[2]
      local expired = false
      for i = 1, #fields, 2 do
        if fields[i] == 'e' then
          now = now or now_ms()
          expired = tonumber(fields[i + 1]) <= now
        end
      end
      if not noack then
        if expired then redis.call('XACK', s, G, id) end
      end
      if noack or expired then redis.call('XDEL', s, id) end
      if expired then
        dead_letter(name, fields, 'expired', now)
      else
        out[#out + 1] = {level, id, fields}
        want = want - 1
      end
    end
  end
end
local tails = {}
if want > 0 then
  for level = 0, l - 1 do
    local info = as_map(redis.call('XINFO', 'STREAM', skey(name, level)))
    tails[#tails + 1] = info['last-generated-id']
  end
end
return {out, tails}
"""

# ARGV: prefix, queue, stream, id, 'requeue', 'reject' or 'expire' (a consumer found it expired)
SETTLE = r"""
local name, s, id = ARGV[2], ARGV[3], ARGV[4]
local p = redis.call('XPENDING', s, G, id, id, 1)[1]
if not p then return 0 end
if ARGV[5] == 'requeue' then
  requeue(s, id, tonumber(p[4]))
  return 1
end
local entry = redis.call('XRANGE', s, id, id)[1]
redis.call('XACK', s, G, id)
redis.call('XDEL', s, id)
local reason = 'rejected'
if ARGV[5] == 'expire' then reason = 'expired' end
if entry then dead_letter(name, entry[2], reason, now_ms()) end
return 1
"""

# ARGV: prefix, queue, consumer, ids it still holds... Requeue the rest of what it has pending.
RETIRE = r"""
local name, consumer, keep = ARGV[2], ARGV[3], {}
for i = 4, #ARGV do keep[ARGV[i]] = true end
for level = 0, levels_of(name) - 1 do
  local s = skey(name, level)
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', s, G)) do
    local info = as_map(c)
    if info['name'] == consumer then
      release_consumer(s, consumer, tonumber(info['pending']), keep)
    end
  end
end
return 1
"""

# ARGV: prefix, queue, 'size' or 'purge'. Ready entries: size dead-letters the expired ones
# first and counts; purge deletes them all and says how many there were.
READY = r"""
local name, purge = ARGV[2], ARGV[3] == 'purge'
local l = levels_of(name)
if l == 0 then return not_found('queue', name) end
local expire = not purge and redis.call('HGET', qkey(name), 'tt') == '1'
local total, now = 0, nil
for level = 0, l - 1 do
  local s = skey(name, level)
  if purge or expire then
    local start = '(' .. last_delivered(s)
    while true do
      local batch = redis.call('XRANGE', s, start, '+', 'COUNT', 500)
      if #batch == 0 then break end
      for _, e in ipairs(batch) do
        if purge then
          redis.call('XDEL', s, e[1])
          total = total + 1
        else
          local fields = e[2]
          for i = 1, #fields, 2 do
            if fields[i] == 'e' then
              now = now or now_ms()
              if tonumber(fields[i + 1]) <= now then
                redis.call('XDEL', s, e[1])
                dead_letter(name, fields, 'expired', now)
              end
            end
          end
        end
      end
      start = '(' .. batch[#batch][1]
    end
  end
  if not purge then
    total = total + redis.call('XLEN', s) - redis.call('XPENDING', s, G)[1]
  end
end
return total
"""

SCRIPTS: dict[str, str] = {
    "heartbeat": HEARTBEAT,
    "release": RELEASE,
    "declare_queue": DECLARE_QUEUE,
    "delete_queue": DELETE_QUEUE,
    "declare_exchange": DECLARE_EXCHANGE,
    "delete_exchange": DELETE_EXCHANGE,
    "bind": BIND,
    "publish": PUBLISH,
    "consume": CONSUME,
    "fetch": FETCH,
    "settle": SETTLE,
    "retire": RETIRE,
    "ready": READY,
}
"""Script name → body; each is sent with ``PRELUDE`` in front."""
