-- One price batch: update P:latest:{SYMBOL} hashes, then PUBLISH every event.
-- ARGV[1]          n, the number of latest-hash updates (one per symbol and type)
-- ARGV[2..5]       lag record: publish time (ns), the age (ns) of the batch's oldest and of
--                  its newest event at that time, the number of events
-- ARGV[6]          the updates, one msgpack array of 4n strings: for update i, the field
--                  (event type), ts_ns and received_at_ns as decimal digits, the event JSON
-- ARGV[7]          the channel prefix (P:prices:)
-- ARGV[8]          the events in the batch's order, one msgpack array of symbol, JSON pairs
-- KEYS[i]          the latest hash of update i (i = 1..n): field = type, value = JSON
-- KEYS[n+i]        its meta hash P:meta:latest:{SYMBOL}: fields {type}:ts_ns and
--                  {type}:received_ns hold the times of the event held in KEYS[i]
-- KEYS[2n+1]       P:meta:prices:published, the lag record (a hash)
-- Two arrays instead of an argument per value: the worker's client packed each argument in
-- Python (a quarter of a batch's cost there); cmsgpack unpacks them in C, here.
-- A field is replaced only by a newer event: a greater ts_ns, or an equal ts_ns received
-- later (daily and updated bars repeat their bar's time as they accumulate). The held times
-- come from the meta hash, never from the JSON (a field with no held times, written before
-- the meta hash existed, is replaced). Both hashes are written together, and first, so a
-- subscriber that reads the hash on a message sees it updated.
-- Returns the number of fields replaced.
local function is_newer(ts, received, held)
  local held_ts, held_received = held[1], held[2]
  if not held_ts or not held_received then return true end
  local order = compare_digits(ts, held_ts)
  if order ~= 0 then return order > 0 end
  return compare_digits(received, held_received) > 0
end

local n = tonumber(ARGV[1])
local updates = n > 0 and cmsgpack.unpack(ARGV[6]) or {}
local replaced = 0
for i = 1, n do
  local base = (i - 1) * 4
  local field, ts, received = updates[base + 1], updates[base + 2], updates[base + 3]
  local ts_field, received_field = field .. ':ts_ns', field .. ':received_ns'
  local held = redis.call('HMGET', KEYS[n + i], ts_field, received_field)
  if is_newer(ts, received, held) then
    redis.call('HSET', KEYS[i], field, updates[base + 4])
    redis.call('HSET', KEYS[n + i], ts_field, ts, received_field, received)
    replaced = replaced + 1
  end
end
local prefix = ARGV[7]
local events = cmsgpack.unpack(ARGV[8])
for j = 1, #events, 2 do
  redis.call('PUBLISH', prefix .. events[j], events[j + 1])
end
redis.call('HSET', KEYS[2 * n + 1], 'at_ns', ARGV[2], 'oldest_age_ns', ARGV[3],
  'newest_age_ns', ARGV[4], 'events', ARGV[5])
return replaced
