-- Renew a lease, or release it (ARGV[2] = 0), only if the caller's token still holds it.
-- KEYS[1] P:lease:{LEASE}   ARGV[1] token   ARGV[2] TTL in ms, or 0 to release
-- Returns 1 when done, 0 when the lease is gone or held by another token.
local held = redis.call('GET', KEYS[1])
if not held then
  return 0
end
local ok, doc = pcall(cjson.decode, held)
if not ok or type(doc) ~= 'table' or doc.token ~= ARGV[1] then
  return 0
end
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
