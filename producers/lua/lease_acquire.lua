-- Take an active/standby lease if nobody holds it.
-- KEYS[1] P:lease:{LEASE}             JSON {holder, epoch, since, token}, with a TTL
-- KEYS[2] P:meta:lease:{LEASE}:epoch  the epoch counter (outlives the lease)
-- ARGV[1] holder (PRODUCER_NAME)  ARGV[2] token  ARGV[3] since (RFC 3339)  ARGV[4] TTL in ms
-- Returns the new epoch, or 0 when the lease is held (by anyone, this holder included).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local epoch = redis.call('INCR', KEYS[2])
local doc = cjson.encode({holder = ARGV[1], epoch = epoch, since = ARGV[3], token = ARGV[2]})
redis.call('SET', KEYS[1], doc, 'PX', ARGV[4])
return epoch
