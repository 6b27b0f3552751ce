-- READY: count a queue's ready entries ('size': dead-lettering the expired ones first), or
-- delete them all ('purge').
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, queue, 'size' or 'purge'
-- Returns: how many ready entries there were; NOTFOUND when the queue does not exist
local queue, purge = ARGV[2], ARGV[3] == 'purge'
local levels = levels_of(queue)
if levels == 0 then return not_found('queue', queue) end
local expire = not purge and redis.call('HGET', queue_key(queue), 'has_deadlines') == '1'
local total, now = 0, nil
for level = 0, levels - 1 do
  local stream = stream_key(queue, level)
  if purge or expire then
    local start = '(' .. last_delivered(stream)
    while true do
      local batch = redis.call('XRANGE', stream, start, '+', 'COUNT', 500)
      if #batch == 0 then break end
      for _, entry in ipairs(batch) do
        if purge then
          redis.call('XDEL', stream, entry[1])
          total = total + 1
        else
          local fields = entry[2]
          for i = 1, #fields, 2 do
            if fields[i] == 'e' then
              now = now or now_ms()
              if tonumber(fields[i + 1]) <= now then
                redis.call('XDEL', stream, entry[1])
                dead_letter(queue, fields, 'expired', now)
              end
            end
          end
        end
      end
      start = '(' .. batch[#batch][1]
    end
  end
  if not purge then
    total = total + redis.call('XLEN', stream) - redis.call('XPENDING', stream, GROUP)[1]
  end
end
return total
