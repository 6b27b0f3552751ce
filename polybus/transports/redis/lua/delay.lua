-- DELAY: keep messages until they are due, then route them as published then (release_due).
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, exchange, routing key, delay (ms), then four per message: body, properties
--       (JSON), TTL ('': a delayed message has none), priority ('' for none)
-- Returns: when the first of them falls due (ms, server clock); NOTFOUND when the exchange
--          does not exist
local exchange, key, delay = ARGV[2], ARGV[3], tonumber(ARGV[4])
local FIRST_MESSAGE = 5
if exchange ~= '' and redis.call('EXISTS', prefix .. 'x:' .. exchange) == 0 then
  return not_found('exchange', exchange)
end
local due = now_ms() + delay + 1  -- now_ms rounds down: never early
for i = FIRST_MESSAGE, #ARGV, 4 do
  local id = redis.call('INCR', prefix .. 'dseq')
  local fields = {'x', exchange, 'k', key, 'b', ARGV[i], 'm', ARGV[i + 1]}
  if ARGV[i + 3] ~= '' then
    fields[9] = 'pr'
    fields[10] = ARGV[i + 3]
  end
  redis.call('HSET', prefix .. 'd:' .. id, unpack(fields))
  redis.call('ZADD', prefix .. 'delayed', fmt(due), id)
end
return fmt(due)
