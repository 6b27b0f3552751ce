-- READY: count a queue's ready entries ('size': dead-lettering the expired ones first), or
-- delete them all ('purge'), or count them with the pending entries and live consumers
-- ('stats').
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, queue, 'size', 'purge' or 'stats'
-- Returns: how many ready entries there were ('stats': {ready, pending over every level,
--          registered consumers whose connection is alive}); NOTFOUND when the queue does not
--          exist
local queue, mode = ARGV[2], ARGV[3]
local purge = mode == 'purge'
local levels = levels_of(queue)
if levels == 0 then return not_found('queue', queue) end
-- consumers registered by CONSUME whose connection's deadline has not passed (one that died
-- is unregistered only when reaped)
local function live_consumers()
  local now, live = now_ms(), 0
  for _, consumer in ipairs(redis.call('SMEMBERS', prefix .. 'qc:' .. queue)) do
    local connection = string.sub(consumer, 1, string.find(consumer, '/', 1, true) - 1)
    local alive_until = redis.call('ZSCORE', prefix .. 'conns', connection)
    if alive_until and tonumber(alive_until) > now then live = live + 1 end
  end
  return live
end
local expire = not purge and redis.call('HGET', queue_key(queue), 'has_deadlines') == '1'
local total, pending, now = 0, 0, nil
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
          local due = deadline(entry[2])
          if due then
            now = now or now_ms()
            if due <= now then
              redis.call('XDEL', stream, entry[1])
              dead_letter(queue, entry[2], 'expired', now)
            end
          end
        end
      end
      start = '(' .. batch[#batch][1]
    end
  end
  if not purge then
    local held = redis.call('XPENDING', stream, GROUP)[1]
    total = total + redis.call('XLEN', stream) - held
    pending = pending + held
  end
end
if mode == 'stats' then return {total, pending, live_consumers()} end
return total
