-- One price batch: update P:latest:{SYMBOL} hashes, then PUBLISH every event.
-- ARGV[1]          n, the number of latest-hash updates (one per symbol and type)
-- KEYS[i]          the latest hash of update i (i = 1..n)
-- ARGV[4i-2..4i+1] update i: the field (event type), ts_ns as decimal digits, received_at
--                  (RFC 3339, fixed width) and the event JSON
-- ARGV[4n+2..]     channel, event JSON pairs, in the batch's order
-- A field is replaced only by a newer event: a greater ts_ns, or an equal ts_ns received
-- later (daily and updated bars repeat their bar's time as they accumulate). The hashes
-- are written first, so a subscriber that reads the hash on a message sees it updated.
-- Returns the number of fields replaced.
local function is_newer(ts, received, held)
  local held_ts = stored_ts(held)
  if not held_ts then return true end
  local order = compare_digits(ts, held_ts)
  if order ~= 0 then return order > 0 end
  local held_received = string.match(held, '"received_at":"([^"]*)"')
  if not held_received then return false end
  local a = string.gsub(received, '%D', '')
  local b = string.gsub(held_received, '%D', '')
  return compare_digits(a, b) > 0
end

local n = tonumber(ARGV[1])
local replaced = 0
for i = 1, n do
  local base = 1 + (i - 1) * 4
  local field = ARGV[base + 1]
  local held = redis.call('HGET', KEYS[i], field)
  if not held or is_newer(ARGV[base + 2], ARGV[base + 3], held) then
    redis.call('HSET', KEYS[i], field, ARGV[base + 4])
    replaced = replaced + 1
  end
end
for j = 2 + 4 * n, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[j], ARGV[j + 1])
end
return replaced
