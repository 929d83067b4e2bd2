"""Lua scripts that make each Redis store operation atomic. ARGV[1] is always the key prefix.

Absent limits and sampling defaults are stored as '' (tonumber('') is nil). Keys are built inside the scripts, so
the store needs a single Redis instance (not Redis Cluster).
"""

CREATE_APP = """
local p = ARGV[1]
if redis.call('HEXISTS', p..'app:by_name', ARGV[2]) == 1 then return {-1, ARGV[2]} end
for i = 14, #ARGV do
  if redis.call('EXISTS', p..'svc:'..ARGV[i]) == 0 then return {-2, ARGV[i]} end
end
local id = redis.call('INCR', p..'app:next_id')
local k = p..'app:'..id
redis.call('HSET', k, 'name', ARGV[2], 'api_key', ARGV[3], 'access_key', ARGV[4], 'sk_hash', ARGV[5],
  'sk_salt', ARGV[6], 'sak_enc', ARGV[7], 'qps', ARGV[8], 'daily', ARGV[9], 'total', ARGV[10],
  'rpm', ARGV[11], 'tpm', ARGV[12], 'created_at', ARGV[13], 'generation', 0)
redis.call('HSET', p..'app:by_name', ARGV[2], id)
redis.call('HSET', p..'app:by_api_key', ARGV[3], id)
redis.call('HSET', p..'app:by_access_key', ARGV[4], id)
redis.call('SADD', p..'app:index', id)
for i = 14, #ARGV do
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
redis.call('HSET', k, 'qps', ARGV[3], 'daily', ARGV[4], 'total', ARGV[5], 'rpm', ARGV[6], 'tpm', ARGV[7])
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
for _, key_id in ipairs(redis.call('SMEMBERS', k..':apikeys')) do
  local h = redis.call('HGET', p..'apikey:by_id', key_id)
  if h then redis.call('DEL', p..'apikey:'..h) end
  redis.call('HDEL', p..'apikey:by_id', key_id)
end
for _, code_id in ipairs(redis.call('SMEMBERS', k..':accesscodes')) do
  redis.call('DEL', p..'accesscode:'..code_id)
  redis.call('SREM', p..'accesscode:index', code_id)
end
redis.call('DEL', k, k..':svcs', k..':apikeys', k..':accesscodes', p..'q:'..id..':total')
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

# ARGV: prefix, app id, second, minute, day, reserve. Returns {0, second_count, day_count, total_count,
# minute_requests, minute_tokens, qps, daily, total, rpm, tpm} when admitted (counts including this request, the
# limits it applied, '' for none), {code, qps, daily, total, rpm, tpm, second_count, day_count, total_count,
# minute_requests, minute_tokens} when a limit refuses it (counts before it: nothing is counted then), {-1} when
# the app no longer exists. The order of checks is quota.check's. Limits are read inside the
# script, so a concurrent `apps limits` change applies to the very next admission.
ADMIT = """
local p, id, second, minute, day, reserve = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local k = p..'app:'..id
if redis.call('EXISTS', k) == 0 then return {-1} end
local lim = redis.call('HMGET', k, 'qps', 'daily', 'total', 'rpm', 'tpm')
for i = 1, 5 do lim[i] = lim[i] or '' end
local qps, daily, total_limit, rpm, tpm = tonumber(lim[1]), tonumber(lim[2]), tonumber(lim[3]), tonumber(lim[4]),
  tonumber(lim[5])
local tk, dk, sk = p..'q:'..id..':total', p..'q:'..id..':day:'..day, p..'q:'..id..':sec:'..second
local mk = p..'q:'..id..':min:'..minute
local total = tonumber(redis.call('GET', tk) or '0')
local dcount = tonumber(redis.call('GET', dk) or '0')
local scount = tonumber(redis.call('GET', sk) or '0')
local m = redis.call('HMGET', mk, 'n', 'tok')
local mreq, mtok = tonumber(m[1] or '0'), tonumber(m[2] or '0')
local code = 0
if total_limit and total >= total_limit then code = 19
elseif daily and dcount >= daily then code = 17
elseif qps and scount >= qps then code = 18
elseif rpm and mreq >= rpm then code = 336501
elseif tpm and mtok + reserve > tpm then code = 336502 end
if code ~= 0 then return {code, lim[1], lim[2], lim[3], lim[4], lim[5], scount, dcount, total, mreq, mtok} end
redis.call('INCR', tk)
redis.call('INCR', dk)
redis.call('EXPIRE', dk, 259200)
redis.call('INCR', sk)
redis.call('EXPIRE', sk, 5)
redis.call('HINCRBY', mk, 'n', 1)
redis.call('HINCRBY', mk, 'tok', reserve)
redis.call('EXPIRE', mk, 120)
return {0, scount + 1, dcount + 1, total + 1, mreq + 1, mtok + reserve, lim[1], lim[2], lim[3], lim[4], lim[5]}
"""

# ARGV: prefix, app id, api_name, app name, day, minute, refund ('1' or '0'), TPM change, succeeded ('1' or '0'),
# prompt tokens, completion tokens. What Store.settle says, in one step; a deleted app's counters stay deleted.
SETTLE = """
local p, id, svc, app_name, day, minute = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local q = p..'q:'..id
if ARGV[7] == '1' then
  if redis.call('EXISTS', q..':total') == 1 then redis.call('DECR', q..':total') end
  if redis.call('EXISTS', q..':day:'..day) == 1 then redis.call('DECR', q..':day:'..day) end
end
local mk = q..':min:'..minute
if redis.call('EXISTS', mk) == 1 and redis.call('HINCRBY', mk, 'tok', ARGV[8]) < 0 then
  redis.call('HSET', mk, 'tok', 0)
end
local uk = p..'usage:'..day..':'..id..':'..svc
redis.call('HINCRBY', uk, ARGV[9] == '1' and 'succeeded' or 'failed', 1)
redis.call('HINCRBY', uk, 'prompt_tokens', ARGV[10])
redis.call('HINCRBY', uk, 'completion_tokens', ARGV[11])
redis.call('HSETNX', uk, 'app_name', app_name)
redis.call('SADD', p..'usage:index', day..'|'..id..'|'..svc)
return 1
"""

# ARGV: prefix, key hash (hex), id, app id, created_at, expires_at ('' for never). 0 when the app does not exist.
CREATE_API_KEY = """
local p, h, key_id, app_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', p..'app:'..app_id) == 0 then return 0 end
redis.call('HSET', p..'apikey:'..h, 'id', key_id, 'app_id', app_id, 'created_at', ARGV[5], 'expires_at', ARGV[6])
redis.call('HSET', p..'apikey:by_id', key_id, h)
redis.call('SADD', p..'app:'..app_id..':apikeys', key_id)
return 1
"""

DELETE_API_KEY = """
local p, key_id = ARGV[1], ARGV[2]
local h = redis.call('HGET', p..'apikey:by_id', key_id)
if not h then return 0 end
local app_id = redis.call('HGET', p..'apikey:'..h, 'app_id')
redis.call('DEL', p..'apikey:'..h)
redis.call('HDEL', p..'apikey:by_id', key_id)
if app_id then redis.call('SREM', p..'app:'..app_id..':apikeys', key_id) end
return 1
"""

# ARGV: prefix, code id, app id, code hash, created_at. 0 when the app does not exist.
CREATE_ACCESS_CODE = """
local p, code_id, app_id = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', p..'app:'..app_id) == 0 then return 0 end
redis.call('HSET', p..'accesscode:'..code_id, 'app_id', app_id, 'hash', ARGV[4], 'created_at', ARGV[5])
redis.call('SADD', p..'accesscode:index', code_id)
redis.call('SADD', p..'app:'..app_id..':accesscodes', code_id)
return 1
"""

DELETE_ACCESS_CODE = """
local p, code_id = ARGV[1], ARGV[2]
local app_id = redis.call('HGET', p..'accesscode:'..code_id, 'app_id')
if not app_id then return 0 end
redis.call('DEL', p..'accesscode:'..code_id)
redis.call('SREM', p..'accesscode:index', code_id)
redis.call('SREM', p..'app:'..app_id..':accesscodes', code_id)
return 1
"""

# Schema 0 -> 2 for one usage row: the admitted `requests` of the first release become succeeded calls. Idempotent,
# so processes that start together may both run it.
MIGRATE_USAGE_ROW = """
local k = ARGV[1]..'usage:'..ARGV[2]
local requests = redis.call('HGET', k, 'requests')
if requests then
  redis.call('HINCRBY', k, 'succeeded', requests)
  redis.call('HDEL', k, 'requests')
end
return 1
"""

# A sorted set per address: one member per counted attempt, scored by its time.
LOGIN_ATTEMPT = """
local k = ARGV[1]..'login:'..ARGV[2]
local now, window, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', k, '-inf', now - window)
if redis.call('ZCARD', k) >= limit then
  return redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')[2]
end
redis.call('ZADD', k, now, ARGV[6])
redis.call('EXPIRE', k, math.ceil(window) + 1)
return false
"""
