-- RETIRE: requeue everything a consumer has pending, but the entries it still holds; a consumer
-- that is cancelled is no longer registered on the queue.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, queue, consumer name, cancelled ('1'/'0'), then the ids it still holds
-- Returns: 1
local queue, consumer, cancelled, FIRST_HELD = ARGV[2], ARGV[3], ARGV[4] == '1', 5
local keep = {}
for i = FIRST_HELD, #ARGV do keep[ARGV[i]] = true end
for level = 0, levels_of(queue) - 1 do
  local stream = stream_key(queue, level)
  for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', stream, GROUP)) do
    local fields = as_map(info)
    if fields['name'] == consumer then
      release_consumer(stream, consumer, tonumber(fields['pending']), keep)
    end
  end
end
if cancelled then redis.call('SREM', prefix .. 'qc:' .. queue, consumer) end
return 1
