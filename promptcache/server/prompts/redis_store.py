"""Prompts in the storage tiers' Redis, so that every replica over one Redis serves the same
registry (the SQLite file is one machine's).

Layout: one Redis hash per tenant, `promptcache:prompts:{<sha256(tenant)[:16]>}` (the braces
keep a tenant's keys in one Redis Cluster slot), with the fields `m:<id>` (name, creation
time), `d:<id>` (default version), `n:<id>` (latest version), `v:<id>:<n>` (a version) and
`bytes` (the size of the tenant's versions, for its storage limit).
Every change is one command or one Lua script on that one key, so it is atomic: two replicas
adding a version at once get versions 2 and 3, and a version added while the prompt is deleted
is refused or deleted with it. A set, `promptcache:prompts:warm`, lists the warm versions of
every tenant for --warm-prompts.

With a tier key (`--tier-key`) versions are sealed with AES-GCM, bound to their tenant and
prompt, as stored responses are: templates are prompt text.
"""

from __future__ import annotations

import hashlib
import json
import time

from promptcache.server.prompts.store import PromptInfo, PromptNotFound, PromptVersion, info_after_change
from promptcache.tiers.codec import Cipher
from promptcache.tiers.redis_store import RedisStore

PREFIX = b"promptcache:prompts:"
WARM_SET = b"warm"

_CREATE = """
redis.call('HSET', KEYS[1], 'm:' .. ARGV[1], ARGV[2], 'd:' .. ARGV[1], 1, 'n:' .. ARGV[1], 1,
           'v:' .. ARGV[1] .. ':1', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'bytes', string.len(ARGV[3]))
return 1
"""
_ADD_VERSION = """
if redis.call('HEXISTS', KEYS[1], 'm:' .. ARGV[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'n:' .. ARGV[1], 1)
redis.call('HSET', KEYS[1], 'v:' .. ARGV[1] .. ':' .. n, ARGV[2])
redis.call('HINCRBY', KEYS[1], 'bytes', string.len(ARGV[2]))
return n
"""
_SET_DEFAULT = """
if redis.call('HEXISTS', KEYS[1], 'v:' .. ARGV[1] .. ':' .. ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'd:' .. ARGV[1], ARGV[2])
return 1
"""
_VERSION = """
local n = ARGV[2]
if n == '' then n = redis.call('HGET', KEYS[1], 'd:' .. ARGV[1]) end
if not n then return false end
local v = redis.call('HGET', KEYS[1], 'v:' .. ARGV[1] .. ':' .. n)
if not v then return false end
return {n, v}
"""
_DELETE = """
local n = tonumber(redis.call('HGET', KEYS[1], 'n:' .. ARGV[1]) or '0')
local out = {}
for i = 1, n do
  local field = 'v:' .. ARGV[1] .. ':' .. i
  local v = redis.call('HGET', KEYS[1], field)
  if v then
    table.insert(out, tostring(i)); table.insert(out, v)
    redis.call('HINCRBY', KEYS[1], 'bytes', -string.len(v))
  end
  redis.call('HDEL', KEYS[1], field)
end
redis.call('HDEL', KEYS[1], 'm:' .. ARGV[1], 'd:' .. ARGV[1], 'n:' .. ARGV[1])
return out
"""


class _Redis(RedisStore):
    def run(self, fn):
        return self._call(fn)


class RedisPromptStore:
    def __init__(self, url: str, tier_key: str | None = None, timeout_s: float = 1.0, clock=time.time):
        self._redis = _Redis(url, prefix=PREFIX, timeout_s=timeout_s)
        self._cipher = Cipher.from_hex(tier_key) if tier_key else None
        self.clock = clock

    @staticmethod
    def _hash(tenant: str) -> bytes:
        return PREFIX + b"{" + hashlib.sha256(tenant.encode()).hexdigest()[:16].encode() + b"}"

    def _seal(self, tenant: str, prompt_id: str, template: str, warm: bool, created_at: float) -> bytes:
        value = json.dumps({"template": template, "warm": warm, "created_at": created_at}).encode()
        if self._cipher is not None:
            value = self._cipher.seal(value, json.dumps([tenant, prompt_id]).encode())
        return value

    def _open(self, tenant: str, prompt_id: str, version: int, value: bytes) -> PromptVersion:
        if self._cipher is not None:
            value = self._cipher.open(memoryview(value), json.dumps([tenant, prompt_id]).encode())
        data = json.loads(value)
        return PromptVersion(prompt_id, version, data["template"], data["warm"], data["created_at"])

    def _eval(self, script: str, tenant: str, *args) -> object:
        return self._redis.run(lambda client: client.eval(script, 1, self._hash(tenant), *args))

    def _mark_warm(self, tenant: str, version: PromptVersion) -> None:
        if version.warm:
            member = json.dumps([tenant, version.prompt_id, version.version])
            self._redis.run(lambda client: client.sadd(PREFIX + WARM_SET, member))

    def create(self, tenant: str, prompt_id: str, name: str | None, template: str, warm: bool) -> PromptInfo:
        now = self.clock()
        meta = json.dumps({"name": name, "created_at": now})
        self._eval(_CREATE, tenant, prompt_id, meta, self._seal(tenant, prompt_id, template, warm, now))
        self._mark_warm(tenant, PromptVersion(prompt_id, 1, template, warm, now))
        return PromptInfo(prompt_id, tenant, name, 1, 1, now)

    def add_version(self, tenant: str, prompt_id: str, template: str, warm: bool) -> PromptVersion:
        now = self.clock()
        number = self._eval(_ADD_VERSION, tenant, prompt_id, self._seal(tenant, prompt_id, template, warm, now))
        if not number:
            raise PromptNotFound(prompt_id)
        version = PromptVersion(prompt_id, int(number), template, warm, now)
        self._mark_warm(tenant, version)
        return version

    def info(self, tenant: str, prompt_id: str) -> PromptInfo | None:
        meta, default, latest = self._redis.run(lambda client: client.hmget(
            self._hash(tenant), f"m:{prompt_id}", f"d:{prompt_id}", f"n:{prompt_id}"))
        if meta is None or default is None or latest is None:
            return None
        data = json.loads(meta)
        return PromptInfo(prompt_id, tenant, data["name"], int(default), int(latest), data["created_at"])

    def version(self, tenant: str, prompt_id: str, version: int | None = None) -> PromptVersion | None:
        found = self._eval(_VERSION, tenant, prompt_id, "" if version is None else str(version))
        if not found:
            return None
        number, value = found
        return self._open(tenant, prompt_id, int(number), value)

    def versions(self, tenant: str, prompt_id: str) -> list[PromptVersion]:
        info = self.info(tenant, prompt_id)
        if info is None:
            return []
        fields = [f"v:{prompt_id}:{n}" for n in range(1, info.latest_version + 1)]
        values = self._redis.run(lambda client: client.hmget(self._hash(tenant), fields))
        return [self._open(tenant, prompt_id, n, v) for n, v in enumerate(values, 1) if v is not None]

    def _ids(self, tenant: str) -> list[str]:
        return self._redis.run(lambda client: [field.decode()[2:] for field, _ in
                                               client.hscan_iter(self._hash(tenant), match="m:*", count=1000)])

    def prompts(self, tenant: str) -> list[PromptInfo]:
        infos = [self.info(tenant, prompt_id) for prompt_id in self._ids(tenant)]
        return sorted((i for i in infos if i is not None), key=lambda i: (i.created_at, i.id))

    def count(self, tenant: str) -> int:
        return len(self._ids(tenant))

    def stored_chars(self, tenant: str) -> int:
        """Stored bytes of the tenant's versions (sealed ones included): at least their characters."""
        return int(self._redis.run(lambda client: client.hget(self._hash(tenant), "bytes")) or 0)

    def set_default(self, tenant: str, prompt_id: str, version: int) -> PromptInfo:
        if not self._eval(_SET_DEFAULT, tenant, prompt_id, str(version)):
            raise PromptNotFound(prompt_id)
        return info_after_change(self, tenant, prompt_id)

    def delete(self, tenant: str, prompt_id: str) -> list[PromptVersion]:
        flat = self._eval(_DELETE, tenant, prompt_id) or []
        versions = [self._open(tenant, prompt_id, int(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]
        members = [json.dumps([tenant, prompt_id, v.version]) for v in versions if v.warm]
        if members:
            self._redis.run(lambda client: client.srem(PREFIX + WARM_SET, *members))
        return versions

    def warm_versions(self) -> list[tuple[str, PromptVersion]]:
        members = self._redis.run(lambda client: client.smembers(PREFIX + WARM_SET))
        out = []
        for member in members:
            tenant, prompt_id, number = json.loads(member)
            version = self.version(tenant, prompt_id, number)
            if version is not None:
                out.append((tenant, version))
        return sorted(out, key=lambda item: item[1].created_at)
