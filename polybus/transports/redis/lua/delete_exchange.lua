-- DELETE_EXCHANGE: delete an exchange and its bindings.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, exchange
-- Returns: 1
local name = ARGV[2]
for _, binding in ipairs(redis.call('SMEMBERS', prefix .. 'b:' .. name)) do
  local queue, pattern = split_tab(binding)
  redis.call('SREM', prefix .. 'qb:' .. queue, name .. '\t' .. pattern)
end
redis.call('DEL', prefix .. 'b:' .. name, prefix .. 'x:' .. name)
return 1
