-- PRELUDE: what every script shares; each script is sent with this in front of it.
--
-- Every script gets the key prefix as ARGV[1] and builds its keys from it, so no script takes
-- KEYS: the keys a publish touches depend on the bindings it reads. On Redis Cluster the
-- prefix is a hash tag, so every key of a namespace is in one slot, on the master the script
-- is sent to (_cluster.py). The layout (also in docs/redis.md):
--   <prefix>q:<queue>             hash: the queue's declaration (fields below)
--   <prefix>s:<queue>:<level>     stream: its messages at one priority level, group 'g'
--   <prefix>x:<exchange>          hash: kind ('fanout', 'direct', 'topic'), durable ('True'/'False')
--   <prefix>b:<exchange>          set: bindings, '<queue>\t<key or pattern>'
--   <prefix>qb:<queue>            set: the same bindings seen from the queue, '<exchange>\t<key>'
--   <prefix>conns                 sorted set: connection id -> liveness deadline (ms, server clock)
--   <prefix>cq:<connection>       set: queues the connection consumes
--   <prefix>own:<connection>      set: exclusive and auto-delete queues the connection owns
--   <prefix>qc:<queue>            set: the queue's consumers ('<connection>/<tag>') from CONSUME
--                                 until cancelled or reaped (their connection's liveness in conns)
--   <prefix>delayed               sorted set: delayed message id -> when it is due (ms, server clock)
--   <prefix>d:<id>                hash: a delayed message: x exchange, k key, b body, m properties,
--                                 pr priority (when given)
--   <prefix>dseq                  counter: the last delayed message id
--
-- Queue hash fields: options (JSON, compared on redeclare), levels (priority levels, >= 1),
-- dead_letter (queue name or ''), ttl_ms (queue TTL or ''), exclusive ('1'/'0'), owner
-- (connection or ''), epoch (server run id for a non-durable queue, else ''), has_deadlines
-- ('1' once a message with a deadline was added).
--
-- Stream entry fields: b body, m properties (JSON), x exchange, k routing key, and when they
-- apply pr priority, e deadline (ms, server clock), dc deliveries before this copy, dr/dq/dt
-- why, from which queue and when (ms, first death) it was dead-lettered.

local prefix = ARGV[1]
local GROUP = 'g'
local function queue_key(name) return prefix .. 'q:' .. name end
local function stream_key(name, level) return prefix .. 's:' .. name .. ':' .. level end
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
-- an entry's deadline (ms, server clock), or nil
local function deadline(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'e' then return tonumber(fields[i + 1]) end
  end
  return nil
end
local function as_map(flat)
  local map = {}
  for i = 1, #flat, 2 do map[flat[i]] = flat[i + 1] end
  return map
end
local function levels_of(name)
  return tonumber(redis.call('HGET', queue_key(name), 'levels') or '0')
end
local function not_found(what, name)
  return redis.error_reply('NOTFOUND ' .. what .. ' ' .. name ..
    ' does not exist; declare it first')
end
local function last_delivered(stream)
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = as_map(group)
    if info['name'] == GROUP then return info['last-delivered-id'] end
  end
  return '0-0'
end
local function delete_queue(name)
  local meta = queue_key(name)
  local levels = levels_of(name)
  if levels == 0 then return 0 end
  for level = 0, levels - 1 do redis.call('DEL', stream_key(name, level)) end
  for _, binding in ipairs(redis.call('SMEMBERS', prefix .. 'qb:' .. name)) do
    local exchange, pattern = split_tab(binding)
    redis.call('SREM', prefix .. 'b:' .. exchange, name .. '\t' .. pattern)
  end
  local owner = redis.call('HGET', meta, 'owner')
  if owner and owner ~= '' then redis.call('SREM', prefix .. 'own:' .. owner, name) end
  redis.call('DEL', prefix .. 'qb:' .. name, prefix .. 'qc:' .. name, meta)
  return 1
end
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
local function topic_matches(pattern, key_words)
  local n = #key_words
  local reach = {[0] = true}
  for j = 1, n do reach[j] = false end
  for _, part in ipairs(words(pattern)) do
    if part == '#' then
      for j = 1, n do reach[j] = reach[j] or reach[j - 1] end
    else
      for j = n, 1, -1 do
        reach[j] = reach[j - 1] and (part == '*' or part == key_words[j])
      end
      reach[0] = false
    end
  end
  return reach[n]
end
-- the queues a message published to an exchange with a key reaches, sorted; nil and an
-- error reply when the exchange does not exist ('' is the default exchange: the queue named)
local function route(exchange, key)
  local targets = {}
  if exchange == '' then
    if redis.call('EXISTS', queue_key(key)) == 1 then targets[1] = key end
    return targets
  end
  local kind = redis.call('HGET', prefix .. 'x:' .. exchange, 'kind')
  if not kind then return nil, not_found('exchange', exchange) end
  local seen, key_words = {}, words(key)
  for _, binding in ipairs(redis.call('SMEMBERS', prefix .. 'b:' .. exchange)) do
    local queue, pattern = split_tab(binding)
    if not seen[queue] and (kind == 'fanout' or (kind == 'direct' and pattern == key)
        or (kind == 'topic' and topic_matches(pattern, key_words))) then
      seen[queue] = true
      targets[#targets + 1] = queue
    end
  end
  table.sort(targets)
  return targets
end
-- a stream entry's fields, as every publish writes them
local function entry_fields(body, properties, exchange, key, priority)
  local fields = {'b', body, 'm', properties, 'x', exchange, 'k', key}
  if priority ~= '' then
    fields[9] = 'pr'
    fields[10] = priority
  end
  return fields
end
-- append an entry to a queue at its priority level, with the deadline its TTL gives it
local queue_info = {}
local function push(name, fields, ttl, priority, now)
  local info = queue_info[name]
  if not info then
    local meta = redis.call('HMGET', queue_key(name), 'levels', 'ttl_ms')
    info = {tonumber(meta[1]), tonumber(meta[2])}
    queue_info[name] = info
  end
  local level = 0
  if info[1] > 1 and priority then level = math.max(0, math.min(priority, info[1] - 1)) end
  if info[2] and (not ttl or info[2] < ttl) then ttl = info[2] end
  if ttl then
    fields[#fields + 1] = 'e'
    fields[#fields + 1] = fmt(now + ttl)
    redis.call('HSET', queue_key(name), 'has_deadlines', '1')
  end
  redis.call('XADD', stream_key(name, level), '*', unpack(fields))
end
local function dead_letter(name, fields, reason, now)
  local target = redis.call('HGET', queue_key(name), 'dead_letter')
  if not target or target == '' or levels_of(target) == 0 then return end
  local copy, priority, first = {}, nil, nil
  for i = 1, #fields, 2 do
    local field = fields[i]
    if field == 'dt' then first = fields[i + 1] end
    if field ~= 'e' and field ~= 'dc' and field ~= 'dr' and field ~= 'dq' and field ~= 'dt' then
      copy[#copy + 1] = field
      copy[#copy + 1] = fields[i + 1]
      if field == 'pr' then priority = tonumber(fields[i + 1]) end
    end
  end
  copy[#copy + 1] = 'dr'
  copy[#copy + 1] = reason
  copy[#copy + 1] = 'dq'
  copy[#copy + 1] = name
  copy[#copy + 1] = 'dt'
  copy[#copy + 1] = first or fmt(now)
  push(target, copy, nil, priority, now)
end
-- put a pending entry back at the end of its stream, counting the deliveries it had
local function requeue(stream, id, deliveries)
  local entry = redis.call('XRANGE', stream, id, id)[1]
  redis.call('XACK', stream, GROUP, id)
  redis.call('XDEL', stream, id)
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
  redis.call('XADD', stream, '*', unpack(copy))
end
-- requeue what one consumer holds (but the ids in keep); forget the consumer if nothing stays
local function release_consumer(stream, consumer, pending, keep)
  local kept = 0
  if pending > 0 then
    for _, p in ipairs(redis.call('XPENDING', stream, GROUP, '-', '+', pending, consumer)) do
      if keep[p[1]] then kept = kept + 1 else requeue(stream, p[1], tonumber(p[4])) end
    end
  end
  if kept == 0 then redis.call('XGROUP', 'DELCONSUMER', stream, GROUP, consumer) end
end
-- a connection is gone: requeue what its consumers held, forget them, delete the queues it owned
local function reap_connection(connection)
  local consumer_prefix = connection .. '/'
  for _, queue in ipairs(redis.call('SMEMBERS', prefix .. 'cq:' .. connection)) do
    local registered = prefix .. 'qc:' .. queue
    for _, consumer in ipairs(redis.call('SMEMBERS', registered)) do
      if string.sub(consumer, 1, #consumer_prefix) == consumer_prefix then
        redis.call('SREM', registered, consumer)
      end
    end
    for level = 0, levels_of(queue) - 1 do
      local stream = stream_key(queue, level)
      for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', stream, GROUP)) do
        local info = as_map(consumer)
        if string.sub(info['name'], 1, #consumer_prefix) == consumer_prefix then
          release_consumer(stream, info['name'], tonumber(info['pending']), {})
        end
      end
    end
  end
  for _, queue in ipairs(redis.call('SMEMBERS', prefix .. 'own:' .. connection)) do
    delete_queue(queue)
  end
  redis.call('DEL', prefix .. 'cq:' .. connection, prefix .. 'own:' .. connection)
  redis.call('ZREM', prefix .. 'conns', connection)
end
-- route the delayed messages that fell due (at most limit of them), as published then;
-- returns how many, and when the next falls due (ms, server clock) or false
local function release_due(limit, now)
  local due = redis.call('ZRANGEBYSCORE', prefix .. 'delayed', '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local held = prefix .. 'd:' .. id
    local m = as_map(redis.call('HGETALL', held))
    local targets = m['x'] and route(m['x'], m['k']) or nil
    for _, queue in ipairs(targets or {}) do
      push(queue, entry_fields(m['b'], m['m'], m['x'], m['k'], m['pr'] or ''), nil,
        tonumber(m['pr']), now)
    end
    redis.call('DEL', held)
    redis.call('ZREM', prefix .. 'delayed', id)
  end
  local next_due = redis.call('ZRANGE', prefix .. 'delayed', 0, 0, 'WITHSCORES')[2]
  return #due, next_due or false
end
