-- SETTLE: requeue a pending entry, or dead-letter it (rejected, or found expired by a consumer).
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, queue, stream, entry id, 'requeue', 'reject' or 'expire'
-- Returns: 1 if the entry was pending, else 0
local queue, stream, id, outcome = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local pending = redis.call('XPENDING', stream, GROUP, id, id, 1)[1]
if not pending then return 0 end
if outcome == 'requeue' then
  requeue(stream, id, tonumber(pending[4]))
  return 1
end
local entry = redis.call('XRANGE', stream, id, id)[1]
redis.call('XACK', stream, GROUP, id)
redis.call('XDEL', stream, id)
local reason = 'rejected'
if outcome == 'expire' then reason = 'expired' end
if entry then dead_letter(queue, entry[2], reason, now_ms()) end
return 1
