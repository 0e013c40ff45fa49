"""The wallet projection in Redis (:class:`inplay.ports.WalletStore`): balances, idempotency records and
risk counters. The ledger in Cassandra is the truth; these balances are a projection of it that can be
rebuilt (``set_balances``, reconciliation).

Why Lua: a bet's checks (idempotency key unused, not self-excluded, daily stake limit, balance, book
liability) and its effects (debit, counters, key reservation) must be ONE atomic step, or two concurrent
bets of one account could both pass the balance check. A Lua script runs atomically on the server (no
WATCH/MULTI retry loops under contention), and one script call carries a whole batch: one round trip per
batch of slips (group commit), not one per bet. Scripts are registered once and called with EVALSHA (the
client reloads them if the server lost its script cache).

Keys (``p`` = prefix):

- ``{p}bal:{account}`` — balance, minor units (missing = 0).
- ``{p}idem:{account}:{key}`` — the first call's record for an idempotency key: ``PENDING:<bet_id>`` from
  the debit until the outcome is known, then the final result (JSON); 7-day TTL.
- ``{p}daily:{account}:{yyyymmdd}`` — stake placed that UTC day (2-day TTL).
- ``{p}limits:{account}`` — hash: ``daily_limit``, ``excluded_until`` (ms).
- ``{p}liab:{market_id}/{selection_id}`` — the book's liability on a selection.
- ``{p}applied:{entry_id}`` — a credit (payout, deposit, reversal) was applied to the projection; kept
  forever so that a replayed credit never counts twice.
- ``{p}comp:{bet_id}`` — a debit was compensated (refunded), so it happens once.

Deposits are credits too: ``credit_batch`` with entry id ``deposit:<account>:<idempotency_key>`` (see
``inplay.domain.wallet``), after the ledger row; there is no separate deposit call.

Retries: the client retries a command twice on a connection error (the reply of an applied script may be
lost). Every script is safe to run again: a debit finding its own ``PENDING:<bet_id>`` reports DEBITED
without debiting again, credits and compensations have once-markers, the rest are plain overwrites.

Redis Cluster: the scripts build keys of many accounts from their arguments, which a cluster forbids (all
keys of a script must be declared and live in one slot). It would need a hash tag per account
(``{p}bal:{acct}``, ``{p}idem:{acct}:...``) and batches grouped by slot (one script call per slot), with
selection liability counters moved to their own call. Not done here: one Redis primary (with a replica)
per deployment of the wallet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from inplay.ports import AccountLimits, Credit, Debit, DebitResult

IDEMPOTENCY_TTL_S = 7 * 24 * 3600
DAILY_TTL_S = 2 * 24 * 3600
COMPENSATION_TTL_S = 7 * 24 * 3600
MAX_CONNECTIONS = 64

# Amounts are compared as Lua numbers (doubles, exact below 2^53) but handed to DECRBY/INCRBY as the original
# argument strings, so Redis does the integer arithmetic (a Lua number may be formatted as 1e+15).
# Balances go back as the stored strings (exact integers).
#
# ARGV: prefix, ttl, then per debit: account, key, bet_id, amount, day, now_ms, liability, cap, n, then n
# liability keys. Returns per debit: status, balance, existing record.
_DEBIT_BATCH = """
local prefix, ttl, daily_ttl = ARGV[1], ARGV[2], ARGV[3]
local out = {}
local i = 4
while i <= #ARGV do
  local account, key, bet_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local amount_s, day = ARGV[i + 3], ARGV[i + 4]
  local amount, now_ms = tonumber(amount_s), tonumber(ARGV[i + 5])
  local liability_s = ARGV[i + 6]
  local liability, cap, n = tonumber(liability_s), tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8])
  local first = i + 9
  i = first + n
  local bal_key = prefix .. 'bal:' .. account
  local idem_key = prefix .. 'idem:' .. account .. ':' .. key
  local status
  local existing = redis.call('GET', idem_key)
  if existing then
    if existing == 'PENDING:' .. bet_id then
      status, existing = 'DEBITED', ''  -- our own reservation: a retried call that was applied
    else
      status = 'DUPLICATE'
    end
  else
    existing = ''
    local limits = redis.call('HMGET', prefix .. 'limits:' .. account, 'daily_limit', 'excluded_until')
    local daily_limit = tonumber(limits[1]) or 0
    local excluded_until = tonumber(limits[2]) or 0
    local daily_key = prefix .. 'daily:' .. account .. ':' .. day
    if excluded_until > now_ms then
      status = 'SELF_EXCLUDED'
    elseif daily_limit > 0 and (tonumber(redis.call('GET', daily_key)) or 0) + amount > daily_limit then
      status = 'DAILY_STAKE_LIMIT'
    elseif (tonumber(redis.call('GET', bal_key)) or 0) < amount then
      status = 'INSUFFICIENT_FUNDS'
    else
      status = 'DEBITED'
      if cap > 0 then
        for j = first, first + n - 1 do
          if (tonumber(redis.call('GET', prefix .. 'liab:' .. ARGV[j])) or 0) + liability > cap then
            status = 'LIABILITY_EXCEEDED'
            break
          end
        end
      end
      if status == 'DEBITED' then
        redis.call('DECRBY', bal_key, amount_s)
        redis.call('INCRBY', daily_key, amount_s)
        redis.call('EXPIRE', daily_key, daily_ttl)
        if liability ~= 0 then
          for j = first, first + n - 1 do redis.call('INCRBY', prefix .. 'liab:' .. ARGV[j], liability_s) end
        end
        redis.call('SET', idem_key, 'PENDING:' .. bet_id, 'EX', ttl)
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = redis.call('GET', bal_key) or '0'
  out[#out + 1] = existing
end
return out
"""

# ARGV: prefix, then per credit: account, entry_id, amount. Returns 1 (applied now) / 0 (already) per credit.
_CREDIT_BATCH = """
local prefix = ARGV[1]
local out = {}
for i = 2, #ARGV, 3 do
  if redis.call('SET', prefix .. 'applied:' .. ARGV[i + 1], '1', 'NX') then
    redis.call('INCRBY', prefix .. 'bal:' .. ARGV[i], ARGV[i + 2])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# ARGV: prefix, comp_ttl, then per debit: account, key, bet_id, amount, day, liability, n, then n liability keys.
# Applies only where the debit's reservation (PENDING:<bet_id>) is still held, and once per bet (comp marker):
# compensating a debit that never happened, or twice, must not create money. Returns 1/0 per debit.
_COMPENSATE = """
local prefix, comp_ttl = ARGV[1], ARGV[2]
local out = {}
local i = 3
while i <= #ARGV do
  local account, key, bet_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local amount_s, day, liability_s, n = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6])
  local first = i + 7
  i = first + n
  local idem_key = prefix .. 'idem:' .. account .. ':' .. key
  if redis.call('GET', idem_key) == 'PENDING:' .. bet_id
      and redis.call('SET', prefix .. 'comp:' .. bet_id, '1', 'NX', 'EX', comp_ttl) then
    redis.call('INCRBY', prefix .. 'bal:' .. account, amount_s)
    local daily_key = prefix .. 'daily:' .. account .. ':' .. day
    if redis.call('EXISTS', daily_key) == 1 then  -- expired: nothing to release (never go negative)
      redis.call('DECRBY', daily_key, amount_s)
    end
    if tonumber(liability_s) ~= 0 then
      for j = first, first + n - 1 do redis.call('DECRBY', prefix .. 'liab:' .. ARGV[j], liability_s) end
    end
    redis.call('DEL', idem_key)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# ARGV: prefix, ttl, then per record: account, key, result JSON, is_acceptance (1/0).
# An acceptance replaces its own PENDING reservation; a rejection is stored only where nothing is, so it
# can never replace a concurrent call's reservation or acceptance.
_FINISH = """
local prefix, ttl = ARGV[1], ARGV[2]
for i = 3, #ARGV, 4 do
  local k = prefix .. 'idem:' .. ARGV[i] .. ':' .. ARGV[i + 1]
  if ARGV[i + 3] == '1' then
    redis.call('SET', k, ARGV[i + 2], 'EX', ttl)
  else
    redis.call('SET', k, ARGV[i + 2], 'NX', 'EX', ttl)
  end
end
return #ARGV
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _aclose(client: Any) -> None:
    # redis-py 5+ names it aclose(); the installed type stubs predate it.
    await client.aclose()


def _is_acceptance(result_json: str) -> bool:
    # inplay.domain.bets.result_to_json: {"bet": ...} for an accepted bet, {"rejection": ...} otherwise.
    return result_json.startswith('{"bet"')


class RedisWallet:
    def __init__(self, client: aioredis.Redis[bytes], prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._debit = client.register_script(_DEBIT_BATCH)
        self._credit = client.register_script(_CREDIT_BATCH)
        self._compensate = client.register_script(_COMPENSATE)
        self._finish = client.register_script(_FINISH)

    @classmethod
    async def connect(cls, url: str, prefix: str = "inplay:") -> RedisWallet:
        """Connects (and checks the server answers: a wrong URL fails here, not on the first bet)."""
        # A blocking pool: beyond MAX_CONNECTIONS concurrent calls wait for a free connection (backpressure)
        # instead of failing with "Too many connections".
        pool: Any = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=10,
            socket_connect_timeout=2,
            socket_timeout=10,
            # Short retries: a blip is absorbed, a dead server is reported within a second.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        )
        # from_pool: the client owns the pool (close() releases its connections).
        client: aioredis.Redis[bytes] = cast(Any, aioredis.Redis).from_pool(pool)
        try:
            await client.ping()
        except BaseException:
            await _aclose(client)
            raise
        return cls(client, prefix)

    async def close(self) -> None:
        await _aclose(self.client)

    def _k(self, kind: str, *parts: str) -> str:
        return self.prefix + kind + ":" + ":".join(parts)

    # --- bets ------------------------------------------------------------------------------------------

    async def debit_batch(self, debits: Sequence[Debit]) -> list[DebitResult]:
        if not debits:
            return []
        args: list[Any] = [self.prefix, IDEMPOTENCY_TTL_S, DAILY_TTL_S]
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
        raw = await self._debit(args=args)
        return [
            DebitResult(status=_text(raw[i]), balance_minor=int(raw[i + 1]), existing=_text(raw[i + 2]))
            for i in range(0, len(raw), 3)
        ]

    async def compensate(self, debits: Sequence[Debit]) -> None:
        await self.compensate_count(debits)

    async def compensate_count(self, debits: Sequence[Debit]) -> int:
        """``compensate`` that also says how many debits were refunded by this call."""
        if not debits:
            return 0
        args: list[Any] = [self.prefix, COMPENSATION_TTL_S]
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
        return sum(int(v) for v in await self._compensate(args=args))

    async def finish_idempotent(self, records: Sequence[tuple[str, str, str]]) -> None:
        if not records:
            return
        args: list[Any] = [self.prefix, IDEMPOTENCY_TTL_S]
        for account, key, result in records:
            args += [account, key, result, 1 if _is_acceptance(result) else 0]
        await self._finish(args=args)

    async def get_idempotent(self, keys: Sequence[tuple[str, str]]) -> list[str | None]:
        if not keys:
            return []
        raw = await self.client.mget([self._k("idem", a, k) for a, k in keys])
        return [None if v is None else _text(v) for v in raw]

    # --- money -----------------------------------------------------------------------------------------

    async def credit_batch(self, credits: Sequence[Credit]) -> list[bool]:
        if not credits:
            return []
        args: list[Any] = [self.prefix]
        for c in credits:
            args += [c.account_id, c.entry_id, c.amount_minor]
        return [bool(int(v)) for v in await self._credit(args=args)]

    async def balances(self, account_ids: Sequence[str]) -> list[int]:
        if not account_ids:
            return []
        raw = await self.client.mget([self._k("bal", a) for a in account_ids])
        return [0 if v is None else int(v) for v in raw]

    async def set_balances(self, balances: dict[str, int]) -> None:
        """Reconciliation only (the ledger wins). One MSET: all accounts are overwritten at once."""
        if balances:
            await self.client.mset({self._k("bal", a): v for a, v in balances.items()})

    # --- limits ----------------------------------------------------------------------------------------

    async def get_limits(self, account_id: str) -> AccountLimits:
        daily, excluded = await self.client.hmget(self._k("limits", account_id), ["daily_limit", "excluded_until"])
        return AccountLimits(
            daily_stake_limit_minor=int(daily or 0),
            self_excluded_until_ms=int(excluded or 0),
        )

    async def set_limits(self, account_id: str, limits: AccountLimits) -> None:
        await self.client.hset(
            self._k("limits", account_id),
            mapping={
                "daily_limit": limits.daily_stake_limit_minor,
                "excluded_until": limits.self_excluded_until_ms,
            },
        )


__all__ = ["IDEMPOTENCY_TTL_S", "RedisWallet"]
