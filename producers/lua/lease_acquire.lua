-- Take an active/standby lease if nobody holds it, or reserve its next epoch (producers/lease.py).
-- KEYS[1] P:lease:{LEASE}             JSON {holder, epoch, since, token}, with a TTL
-- KEYS[2] P:meta:lease:{LEASE}:epoch  the epoch counter (outlives the lease)
-- ARGV[1] holder (PRODUCER_NAME)  ARGV[2] token  ARGV[3] since (RFC 3339)  ARGV[4] TTL in ms
-- ARGV[5] the highest epoch the caller has held or seen: a new epoch is above it and the counter
-- ARGV[6] an epoch reserved before (confirmed on a replica), or 0 to reserve one now
-- ARGV[7] 1: take the lease with the epoch; 0: only reserve it (grow the counter)
-- Returns the epoch (reserved, or taken); minus the holder's epoch when the lease is held (by
-- anyone, this holder included); 0 when held by an unreadable document, or when the reserved
-- epoch was outrun (another producer reserved one since: reserve again).
local held = redis.call('GET', KEYS[1])
if held then
  local ok, doc = pcall(cjson.decode, held)
  if ok and type(doc) == 'table' and tonumber(doc.epoch) then
    return -tonumber(doc.epoch)
  end
  return 0
end
local counter = tonumber(redis.call('GET', KEYS[2])) or 0
local epoch = tonumber(ARGV[6])
if epoch == 0 then
  epoch = math.max(counter, tonumber(ARGV[5]) or 0) + 1
  redis.call('SET', KEYS[2], string.format('%d', epoch))
elseif epoch ~= counter then
  return 0
end
if ARGV[7] == '1' then
  local doc = cjson.encode({holder = ARGV[1], epoch = epoch, since = ARGV[3], token = ARGV[2]})
  redis.call('SET', KEYS[1], doc, 'PX', ARGV[4])
end
return epoch
