-- Publish one order event exactly once and keep its order's hash at the newest state.
-- KEYS[1]  P:orders:seen:{DEDUPE_ID}   the marker that this event was published
-- KEYS[2]  P:orders:events             the stream of every distinct order event
-- KEYS[3]  P:order:{ORDER_ID}          the order's latest state
-- KEYS[4]  P:orders:state:{STATE_ID}   the marker that this order state was published,
--                                      valued with the source that published it
-- ARGV[1]  the marker's TTL in seconds
-- ARGV[2]  the stream's approximate MAXLEN
-- ARGV[3]  the channel P:orders
-- ARGV[4]  the event JSON
-- ARGV[5]  the event's ts_ns as decimal digits
-- KEYS[5]  P:orders:open                the set of open order ids (the reconciliation index)
-- ARGV[6]  the event's source: stream or reconciliation
-- ARGV[7]  the order id
-- ARGV[8]  the retention of a final order's hash, seconds (ORDER_RETENTION)
-- ARGV[9]  '1' when the event's status is final, else '0'
-- ARGV[10..] field, value pairs for the order hash (besides json), ts_ns and updated_at
--           among them (schema.ORDER_HASH_FROM_EVENT)
-- Returns 0 for a duplicate (nothing published), 1 for a new event older than the order's
-- state (published, hash kept), 2 for a new event that also updated the hash.
-- The marker is written last: an error part-way leaves it unset, so a retry can redo the
-- work. A full Redis (maxmemory, noeviction) refuses a script's first write and nothing
-- else, so an out-of-memory error writes nothing here; the worker retries it (it is in
-- alpaca_broker.errors.RETRYABLE; tasks.retry waits it out in the worker) until memory frees.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
-- Reconciliation recovers states, not executions: a reconciliation stand-in for a state
-- already published (by the stream, or by an earlier pass) is a duplicate. A streamed event
-- is never hidden by a stand-in: the real event (its execution id, price and quantity) is
-- published even after the stand-in for the same state (the contract: it is distinct).
local state_source = redis.call('GET', KEYS[4])
if state_source and ARGV[6] == 'reconciliation' then
  redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[4])
redis.call('PUBLISH', ARGV[3], ARGV[4])
local result = 2
-- The held event's time is the hash's own ts_ns field. A hash written before that field
-- existed has only updated_at: RFC 3339 with a fixed width (four-digit year, nine digits
-- of fraction, Z), so comparing the strings compares the times.
local held_ts = redis.call('HGET', KEYS[3], 'ts_ns')
if held_ts then
  -- An event at the same instant as the held one is not older: it updates.
  if compare_digits(ARGV[5], held_ts) < 0 then
    result = 1
  end
else
  local held_at = redis.call('HGET', KEYS[3], 'updated_at')
  if held_at then
    for i = 10, #ARGV, 2 do
      if ARGV[i] == 'updated_at' and ARGV[i + 1] < held_at then
        result = 1
      end
    end
  end
end
if result == 2 then
  local fields = {'json', ARGV[4]}
  for i = 10, #ARGV do
    fields[#fields + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[3], unpack(fields))
  -- Costs flat over months: a final order's hash expires and leaves the open index; an
  -- open one's never expires and is in the index (reconciliation reads it, not a SCAN).
  if ARGV[9] == '1' then
    redis.call('EXPIRE', KEYS[3], ARGV[8])
    redis.call('SREM', KEYS[5], ARGV[7])
  else
    redis.call('PERSIST', KEYS[3])
    redis.call('SADD', KEYS[5], ARGV[7])
  end
end
redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[1])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return result
