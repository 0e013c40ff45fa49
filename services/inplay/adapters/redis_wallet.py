"""The balance projection, idempotency records and risk counters in Redis.

Why Lua: a bet's checks (idempotency key unused, not self-excluded, daily stake limit, balance, book
liability) and its effects (debit, counters, key reservation) must be one atomic step, or two concurrent
bets of one account could both pass the balance check. A Lua script runs atomically on the Redis server,
and one script call handles a whole batch: one round trip per batch (group commit) instead of one per bet.

Keys (all under ``prefix``): ``bal:{account}`` balance in minor units; ``idem:{account}:{key}`` the result of
the first call with that idempotency key ("PENDING:<bet_id>" while in flight), 7-day TTL;
``daily:{account}:{yyyymmdd}`` stake placed today; ``limits:{account}`` responsible-gambling limits;
``liab:{market}/{selection}`` the book's liability; ``applied:{entry_id}`` credit dedupe markers (a payout
or deposit entry is applied to the projection at most once); ``comp:{bet_id}`` compensation marker.

Redis Cluster: the scripts touch keys of many accounts per batch; on a cluster the keys would need hash
tags per account and batches grouped by slot. Not done here (single Redis primary + replica per shard of
accounts is the deployment in k8s/); noted in docs/scaling.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from inplay.ports import AccountLimits, Credit, Debit, DebitResult

IDEMPOTENCY_TTL_S = 7 * 24 * 3600

# ARGV: prefix, then per debit 9 fields: account, key, bet_id, amount, day, now_ms, liability, cap, n_keys,
# followed by n_keys liability keys.
DEBIT_BATCH = """
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local i = 3
local out = {}
while i <= #ARGV do
  local account, key, bet_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local amount, day, now_ms = tonumber(ARGV[i + 3]), ARGV[i + 4], tonumber(ARGV[i + 5])
  local liability, cap, n = tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8])
  local liab_keys = {}
  for j = 1, n do liab_keys[j] = prefix .. 'liab:' .. ARGV[i + 8 + j] end
  i = i + 9 + n
  local bal_key = prefix .. 'bal:' .. account
  local idem_key = prefix .. 'idem:' .. account .. ':' .. key
  local balance = tonumber(redis.call('GET', bal_key) or '0')
  local existing = redis.call('GET', idem_key)
  local status = 'DEBITED'
  if existing then
    status = 'DUPLICATE'
  else
    local limits = redis.call('HMGET', prefix .. 'limits:' .. account, 'daily_limit', 'excluded_until')
    local daily_limit = tonumber(limits[1] or '0')
    local excluded_until = tonumber(limits[2] or '0')
    local daily_key = prefix .. 'daily:' .. account .. ':' .. day
    if excluded_until > now_ms then
      status = 'SELF_EXCLUDED'
    elseif daily_limit > 0 and tonumber(redis.call('GET', daily_key) or '0') + amount > daily_limit then
      status = 'DAILY_STAKE_LIMIT'
    elseif balance < amount then
      status = 'INSUFFICIENT_FUNDS'
    else
      if cap > 0 then
        for j = 1, n do
          if tonumber(redis.call('GET', liab_keys[j]) or '0') + liability > cap then
            status = 'LIABILITY_EXCEEDED'
          end
        end
      end
      if status == 'DEBITED' then
        balance = redis.call('DECRBY', bal_key, amount)
        redis.call('INCRBY', daily_key, amount)
        redis.call('EXPIRE', daily_key, 172800)
        for j = 1, n do redis.call('INCRBY', liab_keys[j], liability) end
        redis.call('SET', idem_key, 'PENDING:' .. bet_id, 'EX', ttl)
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = tostring(balance)
  out[#out + 1] = existing or ''
end
return out
"""

CREDIT_BATCH = """
local prefix = ARGV[1]
local out = {}
for i = 2, #ARGV, 3 do
  local account, entry_id, amount = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if redis.call('SET', prefix .. 'applied:' .. entry_id, '1', 'NX') then
    redis.call('INCRBY', prefix .. 'bal:' .. account, amount)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# Per debit: account, key, bet_id, amount, day, liability, n, keys...
COMPENSATE = """
local prefix = ARGV[1]
local i = 2
while i <= #ARGV do
  local account, key, bet_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local amount, day, liability, n = tonumber(ARGV[i + 3]), ARGV[i + 4], tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
  if redis.call('SET', prefix .. 'comp:' .. bet_id, '1', 'NX', 'EX', 604800) then
    redis.call('INCRBY', prefix .. 'bal:' .. account, amount)
    redis.call('DECRBY', prefix .. 'daily:' .. account .. ':' .. day, amount)
    for j = 1, n do redis.call('DECRBY', prefix .. 'liab:' .. ARGV[i + 6 + j], liability) end
    redis.call('DEL', prefix .. 'idem:' .. account .. ':' .. key)
  end
  i = i + 7 + n
end
return 1
"""

# Acceptances overwrite their own PENDING reservation; rejections are stored only where nothing is, so a
# rejection can never replace a concurrent acceptance.
FINISH = """
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
  local k = prefix .. 'idem:' .. ARGV[i] .. ':' .. ARGV[i + 1]
  local value = ARGV[i + 2]
  if string.sub(value, 1, 6) == '{"bet"' then
    redis.call('SET', k, value, 'EX', ttl)
  else
    redis.call('SET', k, value, 'NX', 'EX', ttl)
  end
end
return 1
"""


class RedisWallet:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._sha: dict[str, str] = {}

    @classmethod
    async def connect(cls, url: str, prefix: str = "inplay:") -> RedisWallet:
        client = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=10, max_connections=256)
        wallet = cls(client, prefix)
        await client.ping()
        return wallet

    async def close(self) -> None:
        await self.client.aclose()

    async def _eval(self, script: str, args: Sequence[Any]) -> Any:
        sha = self._sha.get(script)
        if sha is None:
            sha = await self.client.script_load(script)
            self._sha[script] = sha
        try:
            return await self.client.evalsha(sha, 0, *args)
        except NoScriptError:  # the server restarted and lost its script cache
            self._sha.pop(script, None)
            return await self._eval(script, args)

    async def debit_batch(self, debits: Sequence[Debit]) -> list[DebitResult]:
        if not debits:
            return []
        args: list[Any] = [self.prefix, IDEMPOTENCY_TTL_S]
        for d in debits:
            args += [
                d.account_id,
                d.idempotency_key,
                d.bet_id,
                d.amount_minor,
                d.day,
                d.now_ms,
                d.liability_minor,
                d.liability_cap_minor,
                len(d.liability_keys),
                *d.liability_keys,
            ]
        raw = await self._eval(DEBIT_BATCH, args)
        out = []
        for i in range(0, len(raw), 3):
            status, balance, existing = (v.decode() if isinstance(v, bytes) else str(v) for v in raw[i : i + 3])
            out.append(DebitResult(status=status, balance_minor=int(balance), existing=existing))
        return out

    async def credit_batch(self, credits: Sequence[Credit]) -> list[bool]:
        if not credits:
            return []
        args: list[Any] = [self.prefix]
        for c in credits:
            args += [c.account_id, c.entry_id, c.amount_minor]
        raw = await self._eval(CREDIT_BATCH, args)
        return [bool(int(v)) for v in raw]

    async def compensate(self, debits: Sequence[Debit]) -> None:
        if not debits:
            return
        args: list[Any] = [self.prefix]
        for d in debits:
            args += [
                d.account_id,
                d.idempotency_key,
                d.bet_id,
                d.amount_minor,
                d.day,
                d.liability_minor,
                len(d.liability_keys),
                *d.liability_keys,
            ]
        await self._eval(COMPENSATE, args)

    async def finish_idempotent(self, records: Sequence[tuple[str, str, str]]) -> None:
        if not records:
            return
        args: list[Any] = [self.prefix, IDEMPOTENCY_TTL_S]
        for account, key, result in records:
            args += [account, key, result]
        await self._eval(FINISH, args)

    async def get_idempotent(self, keys: Sequence[tuple[str, str]]) -> list[str | None]:
        if not keys:
            return []
        raw = await self.client.mget([f"{self.prefix}idem:{a}:{k}" for a, k in keys])
        return [v.decode() if v is not None else None for v in raw]

    async def balances(self, account_ids: Sequence[str]) -> list[int]:
        if not account_ids:
            return []
        raw = await self.client.mget([f"{self.prefix}bal:{a}" for a in account_ids])
        return [int(v) if v is not None else 0 for v in raw]

    async def set_balances(self, balances: dict[str, int]) -> None:
        if balances:
            await self.client.mset({f"{self.prefix}bal:{a}": v for a, v in balances.items()})

    async def get_limits(self, account_id: str) -> AccountLimits:
        daily, excluded = await self.client.hmget(f"{self.prefix}limits:{account_id}", ["daily_limit", "excluded_until"])
        return AccountLimits(
            daily_stake_limit_minor=int(daily or 0), self_excluded_until_ms=int(excluded or 0)
        )

    async def set_limits(self, account_id: str, limits: AccountLimits) -> None:
        await self.client.hset(
            f"{self.prefix}limits:{account_id}",
            mapping={"daily_limit": limits.daily_stake_limit_minor, "excluded_until": limits.self_excluded_until_ms},
        )
