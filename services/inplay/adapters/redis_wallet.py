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
- ``{p}liabrel:{bet_id}`` — the bet's liability is released (it is settled); deleted if a rollback reopens
  it (``settle_liability``), so each settlement moves the counters once.

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
from redis.exceptions import NoScriptError

from inplay.ids import key_part
from inplay.ports import (
    AccountLimits,
    BatchIntent,
    Credit,
    Debit,
    DebitResult,
    LiabilityChange,
    PendingIntent,
    RepairOvertaken,
    ShardClaim,
    WalletNotReplicated,
    WalletRebuild,
    WalletUnavailable,
)

IDEMPOTENCY_TTL_S = 7 * 24 * 3600
DAILY_TTL_S = 2 * 24 * 3600
COMPENSATION_TTL_S = 7 * 24 * 3600
MAX_CONNECTIONS = 64
_US = "\x1f"  # the unit separator packing a debit's fields into one argument

# Amounts are compared as Lua numbers (doubles, exact below 2^53) but handed to DECRBY/INCRBY as the original
# argument strings, so Redis does the integer arithmetic (a Lua number may be formatted as 1e+15).
# Balances go back as the stored strings (exact integers).
#
# ARGV: prefix, ttl, daily_ttl, journal header (shard, slot, owner, meta; shard "" = no journal: the
# legacy call without an intent), then THREE arguments per debit (packed: redis-py's per-argument packing
# was the largest cost of the call):
#   fields  = account US key US bet_id US amount US day US now_ms US liability US cap US hash US pos
#             [US liability key]...         (US = \31; account, key, liability keys escaped by inplay.ids)
#   markets = market ids joined by US (ids never contain control characters: validated at the API)
#   row     = the journal row (stored in the intent when debited)
# Returns one string per debit: status US balance US existing record.
#
# With a journal header the batch is fenced: it runs only while ``jshard:<n>`` is held by ``owner`` (else
# every debit is SHARD_LOST), only while the projection's epoch marker exists and no repair fence is up
# (else NOT_READY), and every debited slip's journal row is stored in ``intent:<n>:<slot>`` in the same
# atomic step: the intent is recorded before any effect outside Redis.
_DEBIT_BATCH = """
local prefix, ttl, daily_ttl = ARGV[1], ARGV[2], ARGV[3]
local shard, slot, owner, meta = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local US = string.char(31)
local function split(s)
  local out, start = {}, 1
  if s == '' then return out end
  while true do
    local stop = string.find(s, US, start, true)
    if not stop then out[#out + 1] = string.sub(s, start) return out end
    out[#out + 1] = string.sub(s, start, stop - 1)
    start = stop + 1
  end
end
local out = {}
local gate = nil
if shard ~= '' then
  if redis.call('GET', prefix .. 'jshard:' .. shard) ~= owner then
    gate = 'SHARD_LOST'
  elseif redis.call('EXISTS', prefix .. 'wallet:epoch') == 0 or redis.call('EXISTS', prefix .. 'wallet:fence') == 1 then
    gate = 'NOT_READY'
  end
end
local intent_key = prefix .. 'intent:' .. shard .. ':' .. slot
local debited = 0
for i = 8, #ARGV, 3 do
  local f = split(ARGV[i])
  local account, key, bet_id, amount_s, day = f[1], f[2], f[3], f[4], f[5]
  local amount, now_ms = tonumber(amount_s), tonumber(f[6])
  local liability_s = f[7]
  local liability, cap = tonumber(liability_s), tonumber(f[8])
  local hash, pos = f[9], f[10]
  local bal_key = prefix .. 'bal:' .. account
  local idem_key = prefix .. 'idem:' .. account .. ':' .. key
  local reservation = 'PENDING:' .. bet_id .. ':' .. hash
  local status
  local existing = ''
  if gate then
    status = gate
  else
    existing = redis.call('GET', idem_key)
    if existing then
      if existing == reservation then
        status, existing = 'DEBITED', ''  -- our own reservation: a retried call that was applied
      else
        status = 'DUPLICATE'
      end
    else
      existing = ''
      for _, market in ipairs(split(ARGV[i + 1])) do
        local st = redis.call('HGET', prefix .. 'mkt:' .. market, 'st')
        if st == '3' then status = 'MARKET_CLOSED' break end
        if st == '2' then status = 'MARKET_SUSPENDED' break end
      end
    end
    if not status then
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
          for j = 11, #f do
            if (tonumber(redis.call('GET', prefix .. 'liab:' .. f[j])) or 0) + liability > cap then
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
            for j = 11, #f do redis.call('INCRBY', prefix .. 'liab:' .. f[j], liability_s) end
          end
          redis.call('SET', idem_key, reservation, 'EX', ttl)
          if shard ~= '' then
            redis.call('HSET', intent_key, 'r' .. pos, ARGV[i + 2])
            debited = debited + 1
          end
        end
      end
    end
  end
  out[#out + 1] = status .. US .. (redis.call('GET', bal_key) or '0') .. US .. existing
end
if shard ~= '' and not gate then
  local head_key = prefix .. 'jhead:' .. shard
  if (tonumber(redis.call('GET', head_key)) or 0) < tonumber(slot) then redis.call('SET', head_key, slot) end
  if debited > 0 then
    redis.call('HSET', intent_key, 'meta', meta)
    redis.call('SADD', prefix .. 'jintents:' .. shard, slot)
  end
end
return out
"""

# ARGV: prefix, ttl, shard, slot, checksum, then one packed argument per record: account US key US
# is_acceptance (1/0) US result (results are JSON or "BET:<id>:<hash>": never a raw US).
# Ends a journal batch whose write is acknowledged: final idempotency records (an acceptance replaces its
# reservation; a rejection is stored only where nothing is), the intent is dropped, and the shard's last
# committed batch (for the checksum chain) moves forward. Safe to run twice (the same values again).
_FINISH_BATCH = """
local prefix, ttl, shard, slot, checksum = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local US = string.char(31)
for i = 6, #ARGV do
  local r = ARGV[i]
  local a = string.find(r, US, 1, true)
  local b = string.find(r, US, a + 1, true)
  local k = prefix .. 'idem:' .. string.sub(r, 1, a - 1) .. ':' .. string.sub(r, a + 1, b - 1)
  local flag, result = string.sub(r, b + 1, b + 1), string.sub(r, b + 3)
  if flag == '1' then
    redis.call('SET', k, result, 'EX', ttl)
  else
    redis.call('SET', k, result, 'NX', 'EX', ttl)
  end
end
if checksum ~= '' then
  local last_key = prefix .. 'jlast:' .. shard
  local last = redis.call('GET', last_key)
  local last_slot = last and tonumber(string.match(last, '^(%d+)|')) or 0
  if last_slot < tonumber(slot) then redis.call('SET', last_key, slot .. '|' .. checksum) end
end
redis.call('DEL', prefix .. 'intent:' .. shard .. ':' .. slot)
redis.call('SREM', prefix .. 'jintents:' .. shard, slot)
return 1
"""

# ARGV: prefix, owner, ttl_ms, shards, preferred. Claims a writer shard: the owner's own lease if it still
# holds one (a restart with the same writer id), else the preferred or the lowest free shard. Returns
# shard, head slot, "slot|checksum" of the last committed batch (or -1 when every shard is taken).
_CLAIM_SHARD = """
local prefix, owner, ttl, shards, preferred = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local function grab(n)
  local key = prefix .. 'jshard:' .. n
  local holder = redis.call('GET', key)
  if holder == owner or (not holder and redis.call('SET', key, owner, 'NX', 'PX', ttl)) then
    redis.call('PEXPIRE', key, ttl)
    return {n, redis.call('GET', prefix .. 'jhead:' .. n) or '0', redis.call('GET', prefix .. 'jlast:' .. n) or ''}
  end
  return nil
end
for n = 0, shards - 1 do
  if redis.call('GET', prefix .. 'jshard:' .. n) == owner then return grab(n) end
end
if preferred >= 0 and preferred < shards then
  local got = grab(preferred)
  if got then return got end
end
for n = 0, shards - 1 do
  local got = grab(n)
  if got then return got end
end
return {-1, '0', ''}
"""

# KEYS: the fence; ARGV: the token, ttl_ms (0 = lower it). Acts only if the fence still holds the token.
_LOWER_FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# ARGV: prefix, shard, owner, ttl_ms (ttl 0 = release). 1 if the lease is (still) ours.
_RENEW_SHARD = """
local key = ARGV[1] .. 'jshard:' .. ARGV[2]
if redis.call('GET', key) ~= ARGV[3] then return 0 end
if tonumber(ARGV[4]) == 0 then redis.call('DEL', key) else redis.call('PEXPIRE', key, ARGV[4]) end
return 1
"""

# ARGV: prefix, then per credit: account, entry_id, amount. Returns 1 (applied now) / 0 (already) per
# credit, or a single -1 when a repair fence is up (nothing applied: the caller retries after the repair).
_CREDIT_BATCH = """
local prefix = ARGV[1]
if redis.call('EXISTS', prefix .. 'wallet:fence') == 1 then return {-1} end
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

# ARGV: prefix, then per bet: bet_id, amount, released (1/0), n, then n liability keys. A bet's marker
# liabrel:<bet_id> exists exactly while its liability is released: releasing sets it and decrements the
# counters, reopening (a rollback) deletes it and increments them, each only if the marker says otherwise,
# so a page redone after a crash (or a re-run, or a correction) never moves a counter twice. Returns 1/0
# per bet, or a single -1 when a repair fence is up (nothing changed: the caller retries).
_SETTLE_LIABILITY = """
local prefix = ARGV[1]
if redis.call('EXISTS', prefix .. 'wallet:fence') == 1 then return {-1} end
local out = {}
local i = 2
while i <= #ARGV do
  local marker = prefix .. 'liabrel:' .. ARGV[i]
  local amount, released, n = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local first = i + 4
  i = first + n
  local op = nil
  if released == '1' then
    if redis.call('SET', marker, '1', 'NX') then op = 'DECRBY' end
  elseif redis.call('DEL', marker) == 1 then
    op = 'INCRBY'
  end
  if op then
    for j = first, first + n - 1 do redis.call(op, prefix .. 'liab:' .. ARGV[j], amount) end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# ARGV: prefix, comp_ttl, intent ("" or "<shard>|<slot>"), then per debit: account, key, bet_id, amount, day,
# liability, n, then n liability keys. Applies only where the debit's reservation (PENDING:<bet_id>) is still
# held, and once per bet (comp marker): compensating a debit that never happened, or twice, must not create
# money. With an intent, the batch's intent is dropped in the same atomic step, so that a batch whose stakes
# were returned can never be rolled forward later. Returns 1/0 per debit.
_COMPENSATE = """
local prefix, comp_ttl, intent = ARGV[1], ARGV[2], ARGV[3]
local out = {}
local i = 4
while i <= #ARGV do
  local account, key, bet_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local amount_s, day, liability_s, n = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6])
  local first = i + 7
  i = first + n
  local idem_key = prefix .. 'idem:' .. account .. ':' .. key
  local held = redis.call('GET', idem_key)
  local reservation = 'PENDING:' .. bet_id .. ':'
  if held and string.sub(held, 1, #reservation) == reservation
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
if intent ~= '' then
  local bar = string.find(intent, '|', 1, true)
  local shard, slot = string.sub(intent, 1, bar - 1), string.sub(intent, bar + 1)
  redis.call('DEL', prefix .. 'intent:' .. shard .. ':' .. slot)
  redis.call('SREM', prefix .. 'jintents:' .. shard, slot)
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


def _is_acceptance(result: str) -> bool:
    # inplay.domain.bets: "BET:<bet_id>:<slip hash>" (or, before it, {"bet": ...}) for an accepted bet.
    return result.startswith(("BET:", '{"bet"'))


class RedisWallet:
    """``wait_replicas`` > 0: every money script is followed, on the same connection, by ``WAIT
    wait_replicas wait_timeout_ms``; fewer acknowledgements raise WalletNotReplicated (the write is on the
    primary, but a failover now could lose it). Replication is one ordered stream, so the acknowledgement
    of a later write covers every earlier one (``replication_barrier``)."""

    def __init__(
        self, client: aioredis.Redis[bytes], prefix: str, *, wait_replicas: int = 0, wait_timeout_ms: int = 250
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._debit = client.register_script(_DEBIT_BATCH)
        self._credit = client.register_script(_CREDIT_BATCH)
        self._settle_liability = client.register_script(_SETTLE_LIABILITY)
        self._compensate = client.register_script(_COMPENSATE)
        self._finish = client.register_script(_FINISH)
        self._finish_batch = client.register_script(_FINISH_BATCH)
        self._claim = client.register_script(_CLAIM_SHARD)
        self._renew = client.register_script(_RENEW_SHARD)
        self._lower = client.register_script(_LOWER_FENCE)

    @classmethod
    async def connect(
        cls, url: str, prefix: str = "inplay:", *, wait_replicas: int = 0, wait_timeout_ms: int = 250
    ) -> RedisWallet:
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
        return cls(client, prefix, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)

    async def close(self) -> None:
        await _aclose(self.client)

    async def _money(self, script: Any, args: list[Any], keys: Sequence[str] = ()) -> Any:
        """Runs a money script; with ``wait_replicas``, then WAITs for the replicas on the same connection."""
        if self.wait_replicas <= 0:
            return await script(keys=list(keys), args=args)
        try:
            return await self._then_wait("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # a server that has not seen the script (restarted, failed over): load it once
            script.sha = await self.client.script_load(script.script)  # type: ignore[no-untyped-call]
            return await self._then_wait("EVALSHA", script.sha, len(keys), *keys, *args)

    async def replication_barrier(self) -> None:
        """Returns once every write the primary has applied so far is on ``wait_replicas`` replicas (a
        marker write, then WAIT on its connection); raises WalletNotReplicated otherwise. A no-op when
        ``wait_replicas`` is 0."""
        if self.wait_replicas > 0:
            await self._then_wait("INCR", f"{self.prefix}wallet:barrier")

    async def _then_wait(self, *command: Any) -> Any:
        """``command``, then ``WAIT`` on the same connection (one pipeline); its reply, or WalletNotReplicated
        when fewer than ``wait_replicas`` replicas acknowledged in time."""
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command(*command)
        pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
        result, acked = await pipe.execute()
        if int(acked) < self.wait_replicas:
            raise WalletNotReplicated(
                f"{acked} of {self.wait_replicas} Redis replicas acknowledged within {self.wait_timeout_ms} ms"
            )
        return result

    def _k(self, kind: str, *parts: str) -> str:
        return self.prefix + kind + ":" + ":".join(key_part(p) for p in parts)

    # --- bets ------------------------------------------------------------------------------------------

    async def debit_batch(self, debits: Sequence[Debit], intent: BatchIntent | None = None) -> list[DebitResult]:
        if not debits:
            return []
        header: list[Any] = ["", "", "", ""]
        if intent is not None:
            meta = f"{intent.prev_slot}|{intent.prev_checksum}|{intent.at_ms}|{intent.claimant}"
            header = [intent.shard, intent.slot, intent.owner, meta]
        args: list[Any] = [self.prefix, IDEMPOTENCY_TTL_S, DAILY_TTL_S, *header]
        for d in debits:
            fields = [
                key_part(d.account_id),
                key_part(d.idempotency_key),
                d.bet_id,
                str(d.amount_minor),
                d.day,
                str(d.now_ms),
                str(d.liability_minor),
                str(d.liability_cap_minor),
                d.slip_hash,
                str(d.pos),
                *d.liability_keys,
            ]
            args += [_US.join(fields), _US.join(d.market_ids), d.row]
        raw = await self._money(self._debit, args)
        out = []
        for item in raw:
            status, balance, existing = _text(item).split(_US, 2)
            out.append(DebitResult(status=status, balance_minor=int(balance), existing=existing))
        return out

    async def finish_batch(self, shard: int, slot: int, checksum: str, records: Sequence[tuple[str, str, str]]) -> None:
        args: list[Any] = [self.prefix, IDEMPOTENCY_TTL_S, shard, slot, checksum]
        for account, key, result in records:
            flag = "1" if _is_acceptance(result) else "0"
            args.append(_US.join((key_part(account), key_part(key), flag, result)))
        await self._money(self._finish_batch, args)

    async def pending_intents(self, shard: int) -> list[PendingIntent]:
        slots = sorted(int(v) for v in await self.client.smembers(f"{self.prefix}jintents:{shard}"))
        out: list[PendingIntent] = []
        for slot in slots:
            fields = {
                _text(k): _text(v)
                for k, v in (await self.client.hgetall(f"{self.prefix}intent:{shard}:{slot}")).items()
            }
            meta = fields.pop("meta", "")
            if not meta:  # dropped meanwhile (finished by the owner): nothing to resolve
                continue
            # prev_slot|prev_checksum|at_ms[|claimant] (intents recorded before slot claims have three parts)
            prev_slot, prev_checksum, at_ms, *claimant = meta.split("|", 3)
            rows = {int(k[1:]): v for k, v in fields.items() if k.startswith("r")}
            out.append(
                PendingIntent(
                    shard, slot, int(prev_slot), prev_checksum, int(at_ms), rows, claimant[0] if claimant else ""
                )
            )
        return out

    async def claim_shard(self, owner: str, ttl_ms: int, shards: int, preferred: int = -1) -> ShardClaim | None:
        shard, head, last = await self._claim(args=[self.prefix, owner, ttl_ms, shards, preferred])
        if int(shard) < 0:
            return None
        last_text = _text(last)
        last_slot, _, last_checksum = last_text.partition("|")
        return ShardClaim(int(shard), int(_text(head)), int(last_slot or 0), last_checksum)

    async def renew_shard(self, shard: int, owner: str, ttl_ms: int) -> bool:
        return bool(int(await self._renew(args=[self.prefix, shard, owner, ttl_ms])))

    async def journal_heads(self, shards: int) -> list[int]:
        raw = await self.client.mget([f"{self.prefix}jhead:{n}" for n in range(shards)])
        return [int(v) if v is not None else 0 for v in raw]

    async def intents_pending(self, shards: int) -> list[int]:
        """Number of unresolved intents per shard (0 everywhere = every debit is committed or resolved)."""
        pipe = self.client.pipeline(transaction=False)
        for n in range(shards):
            pipe.scard(f"{self.prefix}jintents:{n}")
        return [int(v) for v in await pipe.execute()]

    async def shard_holders(self, shards: int) -> list[str | None]:
        raw = await self.client.mget([f"{self.prefix}jshard:{n}" for n in range(shards)])
        return [None if v is None else _text(v) for v in raw]

    async def compensate(self, debits: Sequence[Debit]) -> None:
        await self.compensate_count(debits)

    async def abandon_batch(self, shard: int, slot: int, debits: Sequence[Debit]) -> None:
        """A batch the journal certainly refused: its stakes returned and its intent dropped, atomically."""
        await self.compensate_count(debits, intent=f"{shard}|{slot}")

    async def compensate_count(self, debits: Sequence[Debit], intent: str = "") -> int:
        """``compensate`` that also says how many debits were refunded by this call."""
        if not debits and not intent:
            return 0
        args: list[Any] = [self.prefix, COMPENSATION_TTL_S, intent]
        for d in debits:
            args += [
                key_part(d.account_id),
                key_part(d.idempotency_key),
                d.bet_id,
                d.amount_minor,
                d.day,
                d.liability_minor,
                len(d.liability_keys),
                *d.liability_keys,
            ]
        return sum(int(v) for v in await self._money(self._compensate, args))

    async def finish_idempotent(self, records: Sequence[tuple[str, str, str]]) -> None:
        if not records:
            return
        args: list[Any] = [self.prefix, IDEMPOTENCY_TTL_S]
        for account, key, result in records:
            args += [key_part(account), key_part(key), result, 1 if _is_acceptance(result) else 0]
        await self._money(self._finish, args)

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
            args += [key_part(c.account_id), key_part(c.entry_id), c.amount_minor]
        raw = await self._money(self._credit, args)
        if raw and int(raw[0]) < 0:
            raise WalletUnavailable("the wallet projection is being repaired; retry shortly")
        return [bool(int(v)) for v in raw]

    async def settle_liability(self, changes: Sequence[LiabilityChange]) -> list[bool]:
        if not changes:
            return []
        args: list[Any] = [self.prefix]
        for c in changes:
            # Liability keys arrive escaped (inplay.ids.liability_key), as the debit script receives them.
            args += [key_part(c.bet_id), c.amount_minor, 1 if c.released else 0, len(c.keys), *c.keys]
        raw = await self._money(self._settle_liability, args)
        if raw and int(raw[0]) < 0:
            raise WalletUnavailable("the wallet projection is being repaired; retry shortly")
        return [bool(int(v)) for v in raw]

    async def balances(self, account_ids: Sequence[str]) -> list[int]:
        if not account_ids:
            return []
        raw = await self.client.mget([self._k("bal", a) for a in account_ids])
        return [0 if v is None else int(v) for v in raw]

    async def set_balances(self, balances: dict[str, int]) -> None:
        """Reconciliation only (the ledger wins). One MSET: all accounts are overwritten at once."""
        if balances:
            await self.client.mset({self._k("bal", a): v for a, v in balances.items()})

    # --- the projection's lifecycle (epoch, repair fence, rebuild) ---------------------------------------

    async def epoch(self) -> str | None:
        raw = await self.client.get(f"{self.prefix}wallet:epoch")
        return None if raw is None else _text(raw)

    async def set_epoch(self, epoch: str) -> None:
        await self.client.set(f"{self.prefix}wallet:epoch", epoch)

    async def set_fence(self, up: bool, token: str = "1", ttl_ms: int = 60_000) -> None:
        """Raises the repair fence holding ``token`` for ``ttl_ms`` (``up``), or lowers it if it still holds
        ``token``: a repair overtaken by another one never lowers the other's fence, and a repair that died
        (or whose lift failed) fences the wallet only until the TTL runs out."""
        key = f"{self.prefix}wallet:fence"
        if up:
            await self.client.set(key, token, px=ttl_ms)
        else:
            await self._lower(keys=[key], args=[token, 0])

    async def refresh_fence(self, token: str, ttl_ms: int = 60_000) -> bool:
        """Extends the fence while the repair holding ``token`` runs; False if it is no longer its fence."""
        return bool(int(await self._lower(keys=[f"{self.prefix}wallet:fence"], args=[token, ttl_ms])))

    async def rebuild(self, state: WalletRebuild, fence: str = "1") -> None:
        """Overwrites the projection with state rebuilt from the ledger, atomically and only while the fence
        still holds ``fence`` (WATCH/MULTI): a repair overtaken by another one writes nothing (its state
        may predate bets accepted since), and raises WalletUnavailable."""
        key = f"{self.prefix}wallet:fence"
        async with self.client.pipeline(transaction=True) as pipe:
            await pipe.watch(key)
            held = await pipe.get(key)
            if held is None or _text(held) != fence:
                raise RepairOvertaken("the repair fence is held by another repair; nothing rebuilt")
            pipe.multi()
            self._queue_rebuild(pipe, state)
            try:
                await pipe.execute()
            except aioredis.WatchError as exc:
                raise RepairOvertaken("another repair took the fence meanwhile; nothing rebuilt") from exc

    def _queue_rebuild(self, pipe: Any, state: WalletRebuild) -> None:
        for account, balance in state.balances.items():
            pipe.set(self._k("bal", account), balance)
        for entry_id in state.applied_entry_ids:
            pipe.set(f"{self.prefix}applied:{key_part(entry_id)}", "1")
        for (account, key), record in state.idempotency.items():
            pipe.set(self._k("idem", account, key), record, ex=IDEMPOTENCY_TTL_S)
        for (account, day), amount in state.daily_stake.items():
            pipe.set(self._k("daily", account, day), amount, ex=DAILY_TTL_S)
        for selection, amount in state.liability.items():
            pipe.set(f"{self.prefix}liab:{selection}", amount)
        for bet_id in state.liability_released:
            pipe.set(f"{self.prefix}liabrel:{key_part(bet_id)}", "1")
        for bet_id in state.liability_open:
            pipe.delete(f"{self.prefix}liabrel:{key_part(bet_id)}")
        for account, limits in state.limits.items():
            pipe.hset(
                self._k("limits", account),
                mapping={
                    "daily_limit": limits.daily_stake_limit_minor,
                    "excluded_until": limits.self_excluded_until_ms,
                },
            )
        for shard, (head, last_slot, last_checksum) in state.journal.items():
            pipe.set(f"{self.prefix}jhead:{shard}", head)
            if last_slot:
                pipe.set(f"{self.prefix}jlast:{shard}", f"{last_slot}|{last_checksum}")

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
