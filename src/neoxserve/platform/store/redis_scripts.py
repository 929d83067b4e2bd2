"""Lua scripts that make each Redis store operation atomic. ARGV[1] is always the key prefix.

Absent limits and sampling defaults are stored as '' (tonumber('') is nil). Keys are built inside the scripts, so
the store needs a single Redis instance (not Redis Cluster).
"""

CREATE_APP = """
local p = ARGV[1]
if redis.call('HEXISTS', p..'app:by_name', ARGV[2]) == 1 then return {-1, ARGV[2]} end
for i = 12, #ARGV do
  if redis.call('EXISTS', p..'svc:'..ARGV[i]) == 0 then return {-2, ARGV[i]} end
end
local id = redis.call('INCR', p..'app:next_id')
local k = p..'app:'..id
redis.call('HSET', k, 'name', ARGV[2], 'api_key', ARGV[3], 'access_key', ARGV[4], 'sk_hash', ARGV[5],
  'sk_salt', ARGV[6], 'sak_enc', ARGV[7], 'qps', ARGV[8], 'daily', ARGV[9], 'total', ARGV[10],
  'created_at', ARGV[11], 'generation', 0)
redis.call('HSET', p..'app:by_name', ARGV[2], id)
redis.call('HSET', p..'app:by_api_key', ARGV[3], id)
redis.call('HSET', p..'app:by_access_key', ARGV[4], id)
redis.call('SADD', p..'app:index', id)
for i = 12, #ARGV do
  redis.call('SADD', k..':svcs', ARGV[i])
  redis.call('SADD', p..'svc:'..ARGV[i]..':apps', id)
end
return {id}
"""

ROTATE_APP = """
local p, id = ARGV[1], ARGV[2]
local k = p..'app:'..id
if redis.call('EXISTS', k) == 0 then return 0 end
local old = redis.call('HMGET', k, 'api_key', 'access_key')
redis.call('HDEL', p..'app:by_api_key', old[1])
redis.call('HDEL', p..'app:by_access_key', old[2])
redis.call('HSET', k, 'api_key', ARGV[3], 'access_key', ARGV[4], 'sk_hash', ARGV[5], 'sk_salt', ARGV[6],
  'sak_enc', ARGV[7])
redis.call('HINCRBY', k, 'generation', 1)
redis.call('HSET', p..'app:by_api_key', ARGV[3], id)
redis.call('HSET', p..'app:by_access_key', ARGV[4], id)
return 1
"""

SET_LIMITS = """
local k = ARGV[1]..'app:'..ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('HSET', k, 'qps', ARGV[3], 'daily', ARGV[4], 'total', ARGV[5])
return 1
"""

DELETE_APP = """
local p, id = ARGV[1], ARGV[2]
local k = p..'app:'..id
if redis.call('EXISTS', k) == 0 then return 0 end
local f = redis.call('HMGET', k, 'name', 'api_key', 'access_key')
redis.call('HDEL', p..'app:by_name', f[1])
redis.call('HDEL', p..'app:by_api_key', f[2])
redis.call('HDEL', p..'app:by_access_key', f[3])
for _, s in ipairs(redis.call('SMEMBERS', k..':svcs')) do redis.call('SREM', p..'svc:'..s..':apps', id) end
redis.call('DEL', k, k..':svcs', p..'q:'..id..':total')
redis.call('SREM', p..'app:index', id)
return 1
"""

GRANT = """
local p, id, s = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', p..'app:'..id) == 0 then return -1 end
if redis.call('EXISTS', p..'svc:'..s) == 0 then return -2 end
redis.call('SADD', p..'app:'..id..':svcs', s)
redis.call('SADD', p..'svc:'..s..':apps', id)
return 1
"""

REVOKE = """
local p, id, s = ARGV[1], ARGV[2], ARGV[3]
redis.call('SREM', p..'svc:'..s..':apps', id)
return redis.call('SREM', p..'app:'..id..':svcs', s)
"""

CREATE_SERVICE = """
local p = ARGV[1]
local k = p..'svc:'..ARGV[2]
if redis.call('EXISTS', k) == 1 then return 0 end
redis.call('HSET', k, 'model', ARGV[3], 'temperature', ARGV[4], 'top_p', ARGV[5], 'top_k', ARGV[6],
  'penalty_score', ARGV[7], 'max_output_tokens', ARGV[8], 'created_at', ARGV[9])
redis.call('SADD', p..'svc:index', ARGV[2])
return 1
"""

DELETE_SERVICE = """
local p, s = ARGV[1], ARGV[2]
local k = p..'svc:'..s
if redis.call('EXISTS', k) == 0 then return 0 end
for _, id in ipairs(redis.call('SMEMBERS', k..':apps')) do redis.call('SREM', p..'app:'..id..':svcs', s) end
redis.call('DEL', k, k..':apps')
redis.call('SREM', p..'svc:index', s)
return 1
"""

# Returns {0, second_count, day_count, total_count, qps, daily, total} when admitted (the limits it applied, ''
# for none), {code} when a limit is reached (nothing is counted then), {-1} when the app no longer exists. Limits
# are read inside the script, so a concurrent `apps limits` change applies to the very next admission.
ADMIT = """
local p, id, svc, app_name, second, day = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local k = p..'app:'..id
if redis.call('EXISTS', k) == 0 then return {-1} end
local lim = redis.call('HMGET', k, 'qps', 'daily', 'total')
local qps, daily, total_limit = tonumber(lim[1]), tonumber(lim[2]), tonumber(lim[3])
local tk, dk, sk = p..'q:'..id..':total', p..'q:'..id..':day:'..day, p..'q:'..id..':sec:'..second
local total = tonumber(redis.call('GET', tk) or '0')
local dcount = tonumber(redis.call('GET', dk) or '0')
local scount = tonumber(redis.call('GET', sk) or '0')
if total_limit and total >= total_limit then return {19} end
if daily and dcount >= daily then return {17} end
if qps and scount >= qps then return {18} end
redis.call('INCR', tk)
redis.call('INCR', dk)
redis.call('EXPIRE', dk, 259200)
redis.call('INCR', sk)
redis.call('EXPIRE', sk, 5)
local uk = p..'usage:'..day..':'..id..':'..svc
redis.call('HINCRBY', uk, 'requests', 1)
redis.call('HSETNX', uk, 'app_name', app_name)
redis.call('SADD', p..'usage:index', day..'|'..id..'|'..svc)
return {0, scount + 1, dcount + 1, total + 1, lim[1] or '', lim[2] or '', lim[3] or ''}
"""
