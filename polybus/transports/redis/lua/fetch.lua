-- FETCH: up to count new entries of a queue with priorities, highest level first; expired
-- entries are dead-lettered instead of returned.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, queue, consumer name, count, no ack ('1': read and delete, for auto-ack)
-- Returns: {{level, id, fields}*, tails}: tails (the streams' last ids, to block on) only when
--          fewer than count were found; NOTFOUND when the queue does not exist
local queue, consumer, wanted, no_ack = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
local levels = levels_of(queue)
if levels == 0 then return not_found('queue', queue) end
local found, now = {}, nil
for level = levels - 1, 0, -1 do
  local stream = stream_key(queue, level)
  while wanted > 0 do
    local read
    if no_ack then
      read = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', wanted, 'NOACK',
        'STREAMS', stream, '>')
    else
      read = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', wanted,
        'STREAMS', stream, '>')
    end
    local entries = read and read[1] and read[1][2] or {}
    if #entries == 0 then break end
    for _, entry in ipairs(entries) do
      local id, fields = entry[1], entry[2]
      local due, expired = deadline(fields), false
      if due then
        now = now or now_ms()
        expired = due <= now
      end
      if expired and not no_ack then redis.call('XACK', stream, GROUP, id) end
      if no_ack or expired then redis.call('XDEL', stream, id) end
      if expired then
        dead_letter(queue, fields, 'expired', now)
      else
        found[#found + 1] = {level, id, fields}
        wanted = wanted - 1
      end
    end
  end
end
local tails = {}
if wanted > 0 then
  for level = 0, levels - 1 do
    local info = as_map(redis.call('XINFO', 'STREAM', stream_key(queue, level)))
    tails[#tails + 1] = info['last-generated-id']
  end
end
return {found, tails}
