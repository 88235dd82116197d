-- Publish one news article version exactly once.
-- KEYS[1]  P:news:seen:{ID}   the updated_at (ns, decimal digits) of the newest version
--                             published for this id
-- KEYS[2]  P:news:events      the stream of every distinct news event
-- ARGV[1]  the marker's TTL in seconds
-- ARGV[2]  the stream's approximate MAXLEN
-- ARGV[3]  the channel P:news
-- ARGV[4]  the event JSON
-- ARGV[5]  the article's updated_at in ns, as decimal digits
-- Distinct: an id not seen, or a later updated_at than the one held. A duplicate or an
-- older version returns 0 and writes nothing; a published one returns 1. The marker is
-- written last, so an error part-way (out of memory refuses XADD) lets a retry redo it.
local held = redis.call('GET', KEYS[1])
if held and compare_digits(ARGV[5], held) <= 0 then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[4])
redis.call('PUBLISH', ARGV[3], ARGV[4])
redis.call('SET', KEYS[1], ARGV[5], 'EX', ARGV[1])
return 1
