-- Update P:latest:{SYMBOL} hashes, replacing a field only with a newer event.
-- KEYS[i]    the latest hash of update i
-- ARGV[4i-3] the field: the event type (trade, quote, bar, ...)
-- ARGV[4i-2] the event's ts_ns as decimal digits
-- ARGV[4i-1] the event's received_at (RFC 3339, fixed width)
-- ARGV[4i]   the event JSON
-- Newer means a greater ts_ns, or an equal ts_ns received later (daily and updated bars
-- repeat their bar's time as they accumulate). Returns the number of fields replaced.
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

local replaced = 0
for i = 1, #KEYS do
  local base = (i - 1) * 4
  local field = ARGV[base + 1]
  local held = redis.call('HGET', KEYS[i], field)
  if not held or is_newer(ARGV[base + 2], ARGV[base + 3], held) then
    redis.call('HSET', KEYS[i], field, ARGV[base + 4])
    replaced = replaced + 1
  end
end
return replaced
