-- One price batch's minute bars into the bar histories (P:bars:{SYMBOL} and its meta hash).
-- ARGV[1]            cutoff: bar starts (epoch ms) below it are trimmed, and never added
-- ARGV[2]            trim limit: members trimmed at most in one call (over every history it
--                    touches), so that a long history under a lowered BAR_HISTORY_DAYS never
--                    holds Redis for long (the producer's periodic trim removes the rest)
-- KEYS[2i-1], KEYS[2i]  bar i's sorted set and meta hash (field = minute ms, value = the
--                    received ns of the member held for that minute)
-- ARGV[3i..3i+2]     bar i: its start in epoch ms, its received ns (decimal digits), its JSON
-- Exactly one member per minute: a bar replaces the minute's member only when received
-- strictly later than the held one, so a duplicate or an older receipt changes nothing.
-- Returns the number of members added or replaced.
local cutoff = ARGV[1]
local trim_limit = tonumber(ARGV[2])
local changed = 0
local touched = {}
for i = 1, #KEYS / 2 do
  local zset, meta = KEYS[2 * i - 1], KEYS[2 * i]
  local minute, received, json = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  if compare_digits(minute, cutoff) >= 0 then
    local held = redis.call('HGET', meta, minute)
    if not held or compare_digits(received, held) > 0 then
      redis.call('ZREMRANGEBYSCORE', zset, minute, minute)
      redis.call('ZADD', zset, minute, json)
      redis.call('HSET', meta, minute, received)
      changed = changed + 1
    end
  end
  touched[zset] = meta
end
local bound = '(' .. cutoff
for zset, meta in pairs(touched) do
  if trim_limit <= 0 then break end
  local old = redis.call('ZRANGEBYSCORE', zset, '-inf', bound, 'WITHSCORES', 'LIMIT', 0, trim_limit)
  if #old > 0 then
    trim_limit = trim_limit - #old / 2
    local members, minutes = {}, {}
    for j = 1, #old, 2 do
      members[#members + 1] = old[j]
      minutes[#minutes + 1] = old[j + 1]
    end
    redis.call('ZREM', zset, unpack(members))
    redis.call('HDEL', meta, unpack(minutes))
  end
end
return changed
