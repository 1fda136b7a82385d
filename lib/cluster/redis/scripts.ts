/**
 * The Lua scripts the Redis coordinator runs (each is atomic on the server).
 *
 * Leases: the key holds "<token> <value>"; each script acts only if the key still holds our token
 * (ARGV[1] is "<token> "), so a holder that lost its lease can never extend or delete its
 * successor's.
 */
export const LEASE_RENEW = `local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;
export const LEASE_PUBLISH = `local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'KEEPTTL') return 1 end
return 0`;
export const LEASE_RELEASE = `local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/**
 * The shared index (KEYS: idx:size, idx:total, idx:used). INDEX_ADD counts a digest's size once,
 * however many replicas report it, and raises its recency; INDEX_FORGET un-counts it and drops its
 * recency, returning the size it had (nil when it was not counted).
 */
export const INDEX_ADD = `if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then redis.call('INCRBY', KEYS[2], ARGV[2]) end
redis.call('ZADD', KEYS[3], 'GT', ARGV[3], ARGV[1])
return 1`;
export const INDEX_FORGET = `local s = redis.call('HGET', KEYS[1], ARGV[1])
if s then redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('DECRBY', KEYS[2], s) end
redis.call('ZREM', KEYS[3], ARGV[1])
return s`;
