-- PUBLISH: route messages once, by the exchange's bindings (or to the queue the key names, on
-- the default exchange ''), and append every message to every matching queue, atomically.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, exchange, routing key, mandatory ('1'/'0'), then four per message: body,
--       properties (JSON), TTL in ms ('' for none), priority ('' for none)
-- Returns: how many queues matched; UNROUTABLE when none did and mandatory; NOTFOUND when the
--          exchange does not exist
local exchange, key, mandatory = ARGV[2], ARGV[3], ARGV[4] == '1'
local FIRST_MESSAGE = 5
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
local targets = {}
if exchange == '' then
  if redis.call('EXISTS', queue_key(key)) == 1 then targets[1] = key end
else
  local kind = redis.call('HGET', prefix .. 'x:' .. exchange, 'kind')
  if not kind then return not_found('exchange', exchange) end
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
end
if #targets == 0 then
  if mandatory then
    return redis.error_reply('UNROUTABLE no queue is bound to exchange ' .. exchange ..
      ' for key ' .. key .. '; the message was not delivered')
  end
  return 0
end
local now = now_ms()
for _, queue in ipairs(targets) do
  for i = FIRST_MESSAGE, #ARGV, 4 do
    local body, properties, ttl, priority = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local fields = {'b', body, 'm', properties, 'x', exchange, 'k', key}
    if priority ~= '' then
      fields[9] = 'pr'
      fields[10] = priority
    end
    push(queue, fields, tonumber(ttl), tonumber(priority), now)
  end
end
return #targets
