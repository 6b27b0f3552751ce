-- PUBLISH: route messages once, by the exchange's bindings (or to the queue the key names, on
-- the default exchange ''), and append every message to every matching queue, atomically.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, exchange, routing key, mandatory ('1'/'0'), then four per message: body,
--       properties (JSON), TTL in ms ('' for none), priority ('' for none)
-- Returns: how many queues matched; UNROUTABLE when none did and mandatory; NOTFOUND when the
--          exchange does not exist
local exchange, key, mandatory = ARGV[2], ARGV[3], ARGV[4] == '1'
local FIRST_MESSAGE = 5
local targets, refused = route(exchange, key)
if not targets then return refused end
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
    push(queue, entry_fields(body, properties, exchange, key, priority), tonumber(ttl),
      tonumber(priority), now)
  end
end
return #targets
