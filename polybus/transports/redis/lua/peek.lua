-- PEEK: the first ready entries of a queue, in the order consumers would get them — highest
-- level first, oldest first within a level, as FETCH and XREADGROUP take them (a requeued or
-- reclaimed copy waits at its level's tail) — changing nothing. Expired entries are skipped:
-- a consumer dead-letters them instead of delivering them.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, queue, how many at most
-- Returns: the entries' fields, in that order; NOTFOUND when the queue does not exist
local queue, wanted = ARGV[2], tonumber(ARGV[3])
local levels = levels_of(queue)
if levels == 0 then return not_found('queue', queue) end
local found, now = {}, now_ms()
for level = levels - 1, 0, -1 do
  local stream = stream_key(queue, level)
  local start = '(' .. last_delivered(stream)  -- what is past it was never delivered
  while #found < wanted do
    local batch = redis.call('XRANGE', stream, start, '+', 'COUNT', wanted - #found)
    if #batch == 0 then break end
    for _, entry in ipairs(batch) do
      local due = deadline(entry[2])
      if not due or due > now then found[#found + 1] = entry[2] end
    end
    start = '(' .. batch[#batch][1]
  end
end
return found
