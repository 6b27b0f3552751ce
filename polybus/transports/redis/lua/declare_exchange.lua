-- DECLARE_EXCHANGE: create an exchange, or check it exists as declared.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, exchange, kind ('fanout', 'direct', 'topic'), durable ('True'/'False')
-- Returns: 1 when created, 0 when it existed; CONFLICT exchange\t<name>\t<existing>\t<asked>
local name, kind, durable = ARGV[2], ARGV[3], ARGV[4]
local key = prefix .. 'x:' .. name
local current = redis.call('HMGET', key, 'kind', 'durable')
if current[1] then
  if current[1] ~= kind or current[2] ~= durable then
    local function described(k, d)
      return '{"kind": "' .. k .. '", "durable": ' .. string.lower(d) .. '}'
    end
    return redis.error_reply('CONFLICT exchange\t' .. name .. '\t' ..
      described(current[1], current[2]) .. '\t' .. described(kind, durable))
  end
  return 0
end
redis.call('HSET', key, 'kind', kind, 'durable', durable)
return 1
