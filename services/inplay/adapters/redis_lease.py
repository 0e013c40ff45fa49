"""The settlement lease (LockService port) in Redis: ``SET NX PX`` plus a fencing counter, renewed by
heartbeat.

acquire: atomically (Lua) if the key is free, INCR the key's fence counter and SET key=fence with a TTL.
check:   atomically, if the key still holds our fence, extend the TTL (the heartbeat) and say so.
release: atomically, delete the key only if it still holds our fence.

A holder that pauses longer than the TTL loses the lock; its next ``check`` (before every page write)
fails and it stops. The window between a successful check and the writes that follow is harmless for the
run itself (its rows are deterministic: another holder resuming the same run writes identical rows) and
narrow for different runs (a new run starts only after reading the run history under the lock).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], fence, 'PX', ARGV[1])
return fence
"""

_CHECK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLease:
    def __init__(self, locks: RedisLocks, key: str, fence: int, ttl_ms: int) -> None:
        self._locks = locks
        self._key = key
        self._fence = fence
        self._ttl_ms = ttl_ms

    @property
    def fence(self) -> int:
        return self._fence

    async def check(self) -> bool:
        return bool(await self._locks.check_script(keys=[self._key], args=[str(self._fence), self._ttl_ms]))

    async def release(self) -> None:
        await self._locks.release_script(keys=[self._key], args=[str(self._fence)])


class RedisLocks:
    def __init__(self, client: Any, prefix: str = "inplay:") -> None:
        self._client = client
        self._prefix = prefix
        self.acquire_script = client.register_script(_ACQUIRE)
        self.check_script = client.register_script(_CHECK)
        self.release_script = client.register_script(_RELEASE)
        self._owns_client = False

    @classmethod
    def connect(cls, url: str, prefix: str = "inplay:") -> RedisLocks:
        locks = cls(aioredis.from_url(url, decode_responses=True), prefix)
        locks._owns_client = True
        return locks

    async def acquire(self, key: str, ttl_ms: int) -> RedisLease | None:
        full = self._prefix + "lock:" + key
        fence = int(await self.acquire_script(keys=[full, full + ":fence"], args=[ttl_ms]))
        if fence == 0:
            return None
        return RedisLease(self, full, fence, ttl_ms)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()
