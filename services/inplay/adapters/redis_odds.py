"""The odds cache in Redis (:class:`inplay.ports.LiveOddsCache`) and the feed mapping table.

Layout (``p`` = prefix):

- ``{p}mkt:{market_id}`` — one hash per market: ``v`` (version, a per-market counter assigned here),
  ``st`` (status), ``rs`` (status reason), ``sts`` (provider watermark: the newest provider timestamp
  applied, ms), ``ev``, ``sp`` and ``b`` (the body: ids, names, selections with odds as ``[num, den]``
  ints, ``updated_at``, source — compact JSON, never a float).
- ``{p}ev:{event_id}`` / ``{p}sp:{sport}`` — index sets of market ids.
- ``{p}ks:event:{id}`` / ``{p}ks:sport:{name}`` — engaged kill switches.
- channel ``{p}odds:{event_id}`` — every applied change, published by the same Lua call that wrote it, so
  per market the publish order is the cache order.

Every write is one Lua call per batch. The scripts touch keys they build from the prefix (single Redis
instance or one shard per deployment; on Redis Cluster the market keys would need an event hash tag).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from inplay.core import Odds, encode_price_items
from inplay.domain.feed import fastjson
from inplay.model import MarketState, MarketStatus, SelectionPrice
from inplay.ports import (
    AnsweredPrices,
    CacheWrite,
    FeedStateView,
    OddsNotice,
    PriceWrite,
    ProviderLiveness,
    SentPrices,
    StatusWrite,
    WriteResult,
)

# --- market body (de)serialization -----------------------------------------------------------------------


# One encoder for every body: json.dumps with keyword arguments builds a new encoder per call.
_compact = fastjson.dumps_str


def encode_body(
    market_id: str,
    event_id: str,
    sport: str,
    market_type: str,
    name: str,
    in_play: bool,
    selections: Sequence[SelectionPrice],
    updated_at_ms: int,
    source: str,
) -> str:
    return _compact(
        {
            "m": market_id,
            "e": event_id,
            "sp": sport,
            "t": market_type,
            "n": name,
            "ip": 1 if in_play else 0,
            "s": [[s.selection_id, s.name, s.odds.num, s.odds.den] for s in selections],
            "u": updated_at_ms,
            "src": source,
        }
    )


def decode_state(body: dict[str, Any], version: int, status: int, reason: str) -> MarketState:
    return MarketState(
        market_id=body["m"],
        event_id=body["e"],
        sport=body["sp"],
        market_type=body["t"],
        name=body["n"],
        in_play=bool(body["ip"]),
        status=MarketStatus(status),
        status_reason=reason,
        selections=tuple(SelectionPrice(s[0], s[1], Odds(int(s[2]), int(s[3]))) for s in body["s"]),
        version=version,
        updated_at_ms=int(body["u"]),
        source=body.get("src", ""),
    )


def _pack(items: list[Any]) -> str:
    return _compact(items)


async def _aclose(conn: Any) -> None:
    await conn.aclose()


def _text(value: Any) -> str:
    if value is None or value is False:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _state_from_fields(v: Any, st: Any, rs: Any, b: Any) -> MarketState | None:
    if v is None or v is False or b is None or b is False or _text(b) == "":
        return None
    return decode_state(fastjson.loads(b), int(v), int(st), _text(rs))


def _price_item(w: PriceWrite, body: str, held: MarketState | None) -> list[Any]:
    """One feed-mode item of the price script (layout above ``_WRITE_PRICES``)."""
    provider_ts = str(w.provider_ts_ms or w.source_ts_ms)
    return [
        w.market_id, w.event_id, w.sport, str(w.source_ts_ms), body, w.suspend_reason, 1 if w.correction else 0,
        "feed", 0, 0, "", provider_ts, w.source, w.route_primary, held.version if held is not None else 0,
    ]  # fmt: skip


def _body_of(w: PriceWrite) -> str:
    return encode_body(
        w.market_id, w.event_id, w.sport, w.market_type, w.name, w.in_play, w.selections, w.updated_at_ms, w.source
    )


# MarketStatus(n) costs an enum lookup per call (~2.5 µs under cProfile, once per update): a table instead.
_STATUS = {int(s): s for s in MarketStatus}


def _written_state(w: PriceWrite, version: int, status: int, reason: str) -> MarketState:
    return MarketState(  # positional, in field order (once per update: keywords cost ~30 % more)
        w.market_id,
        w.event_id,
        w.sport,
        w.market_type,
        w.name,
        w.in_play,
        _STATUS[status],
        reason,  # status_reason
        w.selections,
        version,
        w.updated_at_ms,
        w.source,
    )


class _LastWritten:
    """The state of the last price write this process applied, per market. The price script returns the old
    body for the change-log diff; when that body is still the one this writer wrote (the script checks its
    stamp ``bw``, see ``_WRITE_PRICES``), it returns 1 instead, and the state held here is used: that decode
    was ~14 % of the ingest profile, and the text cost Redis and the client an escape and an unescape. Any
    other body (another pod's write, a put, a reset) comes back as text and is decoded. Bounded: cleared when
    full (before a batch is sent: a held state is captured per item, so a concurrent batch cannot swap it)."""

    MAX = 100_000

    def __init__(self) -> None:
        self.writer = uuid.uuid4().hex[:12]
        self._by_market: dict[str, MarketState] = {}

    def held(self, writes: Sequence[PriceWrite]) -> list[MarketState | None]:
        if len(self._by_market) >= self.MAX:
            self._by_market.clear()
        get = self._by_market.get
        return [get(w.market_id) for w in writes]

    @staticmethod
    def before(row: list[Any], held: MarketState | None) -> MarketState | None:
        old_body = row[4]
        if not old_body:
            return None
        version, status, reason = int(row[1]), int(row[2]), str(row[3])
        if type(old_body) is int:  # 1: the body this writer wrote (held), unchanged since
            if held is None:
                raise RuntimeError("price script returned 'the body you hold' for a body not held")
            if held.version == version and int(held.status) == status and held.status_reason == reason:
                return held
            return replace(held, version=version, status=_STATUS[status], status_reason=reason)
        return decode_state(fastjson.loads(old_body), version, status, reason)

    def result(self, w: PriceWrite, row: list[Any], held: MarketState | None) -> WriteResult:
        """The script's answer for ``w``: the state before and, if applied, after (remembered)."""
        outcome = str(row[0])  # the script's JSON: text and integers
        before = self.before(row, held)
        if outcome != "APPLIED":
            return WriteResult(outcome, before, None)
        after = self._by_market[w.market_id] = _written_state(w, int(row[5]), int(row[6]), str(row[7]))
        return WriteResult(outcome, before, after)


def decode_notice(data: bytes | str) -> OddsNotice:
    msg = fastjson.loads(data)
    return OddsNotice(decode_state(msg["b"], int(msg["v"]), int(msg["st"]), msg["rs"]), bool(msg["c"]))


# --- Lua ---------------------------------------------------------------------------------------------------

# ARGV[2] = JSON array of items (one argument: packing 11 arguments per item costs more on the client than the
# whole script on the server): [market_id, event_id, sport, source_ts (string), body, suspend_reason,
# correction (0/1), mode ("feed" | "put"), put_version, put_status, put_reason, provider_ts (string), source,
# route_primary, held_version]. A routed feed write (route_primary set) is STANDBY unless ``source`` is the
# event's active provider in ``{p}feed:route:{event}`` (field ``a``; absent = route_primary): the check every
# pod shares.
# Feed mode is STALE when source_ts (the provider time clamped to the receive time: comparable across
# providers) is older than the market watermark ``sts``, or when provider_ts (the provider's own clock) is not
# newer than that provider's watermark ``pts:{source}`` (order within one provider, whatever its clock).
# A correction may carry the timestamp of the price it corrects (equal to ``pts``: applied, not STALE).
# MATCH_END is held against prices like OPERATOR: only settlement (or an operator resume) ends it.
# ARGV[3] = the writer's id: an applied feed write stamps the body with ``bw`` = "{writer}:{new_v}". When the item's
# held_version names the body this writer wrote last (``bw`` = "{writer}:{held_version}": no other write has
# replaced the body since; a status write bumps ``v`` but keeps ``b``), old_b is returned as the number 1
# ("the body you hold") instead of the text: the client has it, and the text would be JSON-escaped here and
# unescaped there, ~250 bytes per update both ways.
# Returns (JSON text, parsed in C on the client) per item: [outcome, old_v, old_st, old_rs, old_b, new_v, new_st,
# new_rs].
_WRITE_PRICES = r"""
local p = ARGV[1]
local items = cjson.decode(ARGV[2])
local wid = ARGV[3] or ''
local out = {}
local routes = {}
for k = 1, #items do
  local it = items[k]
  local mid, ev, sp, sts, body = it[1], it[2], it[3], it[4], it[5]
  local sreason, corr, mode = it[6], it[7], it[8]
  local pv, pst, prs = it[9], it[10], it[11]
  local pts, src, guard = tonumber(it[12]) or 0, it[13] or '', it[14] or ''
  local held = tonumber(it[15]) or 0
  local pkey = 'pts:' .. src
  local key = p .. 'mkt:' .. mid
  local cur = redis.call('HMGET', key, 'v', 'st', 'rs', 'sts', 'b', pkey, 'bw')
  local exists = cur[1] ~= false
  local cv = tonumber(cur[1]) or 0
  local cst = tonumber(cur[2]) or 0
  local crs = cur[3] or ''
  local outcome = 'APPLIED'
  local nv, nst, nrs = 0, 0, ''
  if mode == 'put' then
    nv = tonumber(pv)
    nst = tonumber(pst)
    nrs = prs
    if exists and nv <= cv then outcome = 'STALE' end
  else
    if guard ~= '' and routes[ev] == nil then
      routes[ev] = redis.call('HGET', p .. 'feed:route:' .. ev, 'a') or guard
    end
    if cst == 3 then
      outcome = 'SETTLED'
    elseif guard ~= '' and routes[ev] ~= src then
      outcome = 'STANDBY'
    elseif tonumber(sts) < (tonumber(cur[4]) or 0) or (pts > 0 and (pts < (tonumber(cur[6]) or 0)
        or (pts == (tonumber(cur[6]) or 0) and tonumber(corr) ~= 1))) then
      outcome = 'STALE'
    else
      nv = cv + 1
      if cst == 2 and crs == 'MATCH_END' then
        nst, nrs = 2, 'MATCH_END'
      elseif redis.call('EXISTS', p .. 'ks:event:' .. ev, p .. 'ks:sport:' .. sp) > 0 then
        nst, nrs = 2, 'KILL_SWITCH'
      elseif cst == 2 and crs == 'OPERATOR' then
        nst, nrs = 2, 'OPERATOR'
      elseif sreason ~= '' then
        nst, nrs = 2, sreason
      else
        nst, nrs = 1, ''
      end
    end
  end
  if outcome == 'APPLIED' then
    local bw = ''
    if mode ~= 'put' and wid ~= '' then bw = wid .. ':' .. nv end
    if pts > 0 then
      redis.call('HSET', key, 'v', nv, 'st', nst, 'rs', nrs, 'sts', sts, 'b', body, 'ev', ev, 'sp', sp, 'bw', bw,
        pkey, pts)
    else
      redis.call('HSET', key, 'v', nv, 'st', nst, 'rs', nrs, 'sts', sts, 'b', body, 'ev', ev, 'sp', sp, 'bw', bw)
    end
    if not exists then
      redis.call('SADD', p .. 'ev:' .. ev, mid)
      redis.call('SADD', p .. 'sp:' .. sp, mid)
    end
    redis.call('PUBLISH', p .. 'odds:' .. ev,
      '{"v":' .. nv .. ',"st":' .. nst .. ',"rs":' .. cjson.encode(nrs) .. ',"c":' .. corr
      .. ',"b":' .. body .. '}')
    local old = cur[5] or ''
    if held > 0 and wid ~= '' and cur[7] == wid .. ':' .. held then old = 1 end
    out[k] = {outcome, cv, cst, crs, old, nv, nst, nrs}
  else
    out[k] = {outcome, cv, cst, crs, '', cv, cst, crs}
  end
end
return cjson.encode(out)
"""

# Per item (7 ARGV): market_id, status, reason, source_ts, only_reasons (comma separated), provider,
# provider_ts. Returns per item: {outcome, old_v, old_st, old_rs, body, new_v, new_st, new_rs}.
# A suspension never replaces MATCH_END (a disconnect, kill switch or goal after the end would otherwise be
# lifted by the next price): only SETTLED, or an explicit resume (operator), changes it.
_WRITE_STATUS = r"""
local p = ARGV[1]
local n = tonumber(ARGV[2])
local out = {}
local i = 3
local function sticky(r) return r == 'OPERATOR' or r == 'KILL_SWITCH' end
for k = 1, n do
  local mid, want, reason, sts, only = ARGV[i], tonumber(ARGV[i+1]), ARGV[i+2], tonumber(ARGV[i+3]), ARGV[i+4]
  local prov, pts = ARGV[i+5], tonumber(ARGV[i+6])
  i = i + 7
  local key = p .. 'mkt:' .. mid
  local cur = redis.call('HMGET', key, 'v', 'st', 'rs', 'sts', 'b', 'ev', 'sp')
  if cur[1] == false then
    -- not priced yet: a bet stop still raises the watermarks (a late, older first price stays out)
    if want == 2 and sts > 0 then
      if sts > (tonumber(cur[4]) or 0) then redis.call('HSET', key, 'sts', sts) end
      if prov ~= '' and pts > (tonumber(redis.call('HGET', key, 'pts:' .. prov)) or 0) then
        redis.call('HSET', key, 'pts:' .. prov, pts)
      end
    end
    out[k] = {'NOT_FOUND', 0, 0, '', '', 0, 0, ''}
  else
    local cv, cst, crs = tonumber(cur[1]), tonumber(cur[2]), cur[3] or ''
    local outcome, nst, nrs = 'APPLIED', cst, crs
    if sts > (tonumber(cur[4]) or 0) then redis.call('HSET', key, 'sts', sts) end
    if prov ~= '' and pts > (tonumber(redis.call('HGET', key, 'pts:' .. prov)) or 0) then
      redis.call('HSET', key, 'pts:' .. prov, pts)
    end
    if cst == 3 then
      if want == 3 then outcome = 'UNCHANGED' else outcome = 'SETTLED' end
    elseif want == 3 then
      nst, nrs = 3, reason
    elseif want == 2 then
      if cst == 2 and (crs == reason or crs == 'OPERATOR' or crs == 'MATCH_END'
          or (crs == 'KILL_SWITCH' and reason ~= 'OPERATOR')) then
        outcome = 'UNCHANGED'
      else
        nst, nrs = 2, reason
      end
    else
      if cst ~= 2 then
        outcome = 'UNCHANGED'
      elseif redis.call('EXISTS', p .. 'ks:event:' .. cur[6], p .. 'ks:sport:' .. cur[7]) > 0 then
        outcome = 'KILL_SWITCH'
      elseif only ~= '' and not string.find(',' .. only .. ',', ',' .. crs .. ',', 1, true) then
        outcome = 'UNCHANGED'
      else
        nst, nrs = 1, ''
      end
    end
    if outcome == 'APPLIED' then
      local nv = cv + 1
      redis.call('HSET', key, 'v', nv, 'st', nst, 'rs', nrs)
      redis.call('PUBLISH', p .. 'odds:' .. cur[6],
        '{"v":' .. nv .. ',"st":' .. nst .. ',"rs":' .. cjson.encode(nrs) .. ',"c":0,"b":' .. cur[5] .. '}')
      out[k] = {outcome, cv, cst, crs, cur[5], nv, nst, nrs}
    else
      out[k] = {outcome, cv, cst, crs, cur[5], cv, cst, crs}
    end
  end
end
return cjson.encode(out)
"""

# --- shared feed state (H6): every ingest pod reads and merges the same provider health and routes ----------
# {p}feed:prov:{provider} hash: seen, lag, lagat, lagbad, gap, reconn (server arrival times, ms), lseq, mts
# (sequence position: last seq and the newest provider ts); {p}feed:seen:{provider} zset of "seq:ts" scored by
# seq (the duplicate window, newest 4096 seqs); {p}feed:route:{event} hash: a = active provider.

# ARGV[2] = JSON [[[provider, [probe "seq:ts", ...]], ...], [event, ...]]. Returns JSON
# [[[provider, seen, lag, lagat, lagbad, gap, reconn, lseq, mts, [probes already seen]], ...], [active, ...]].
_LOAD_FEED = r"""
local p = ARGV[1]
local req = cjson.decode(ARGV[2])
local provs, routes = {}, {}
for k, pr in ipairs(req[1]) do
  local name, probes = pr[1], pr[2]
  local h = redis.call('HMGET', p .. 'feed:prov:' .. name,
    'seen', 'lag', 'lagat', 'lagbad', 'gap', 'reconn', 'lseq', 'mts', 'ps', 'psat', 'rid', 'down')
  local dups = {}
  if #probes > 0 then
    local sc = redis.call('ZMSCORE', p .. 'feed:seen:' .. name, unpack(probes))
    for i = 1, #probes do
      if sc[i] then dups[#dups + 1] = probes[i] end
    end
  end
  provs[k] = {name, tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0, tonumber(h[4]) or 0,
    tonumber(h[5]) or 0, tonumber(h[6]) or 0, tonumber(h[7]) or -1, tonumber(h[8]) or -1, dups,
    h[9] or 'UP', tonumber(h[10]) or 0, h[11] or '', tonumber(h[12]) or 0}
end
for k, ev in ipairs(req[2]) do
  routes[k] = redis.call('HGET', p .. 'feed:route:' .. ev, 'a') or ''
end
return cjson.encode({provs, routes})
"""

# ARGV[2] = JSON [[provider, seen, lag, lagat, lagbad, gap, reconn, lseq, mts, reset (0/1), [[seq, "seq:ts"],
# ...], producer, producer_at, recovery_id, down_since], ...]. Times only move forward; the sequence position
# moves to the newest provider timestamp; the producer status to the newest change.
_SAVE_FEED = r"""
local p = ARGV[1]
local items = cjson.decode(ARGV[2])
for _, it in ipairs(items) do
  local key = p .. 'feed:prov:' .. it[1]
  redis.call('SADD', p .. 'feed:providers', it[1])
  local h = redis.call('HMGET', key, 'seen', 'lagat', 'lagbad', 'gap', 'reconn', 'lseq', 'mts', 'psat')
  if it[13] > (tonumber(h[8]) or 0) then
    redis.call('HSET', key, 'ps', it[12], 'psat', it[13], 'rid', it[14], 'down', it[15])
  end
  local function raise(field, cur, new)
    if new > (tonumber(cur) or -1) then redis.call('HSET', key, field, new) end
  end
  raise('seen', h[1], it[2])
  if it[4] >= (tonumber(h[2]) or -1) then redis.call('HSET', key, 'lag', it[3], 'lagat', it[4]) end
  raise('lagbad', h[3], it[5])
  raise('gap', h[4], it[6])
  raise('reconn', h[5], it[7])
  local cmts = tonumber(h[7]) or -1
  if it[9] > cmts or (it[9] == cmts and it[8] > (tonumber(h[6]) or -1)) then
    redis.call('HSET', key, 'lseq', it[8], 'mts', it[9])
  end
  local z = p .. 'feed:seen:' .. it[1]
  if it[10] == 1 then redis.call('DEL', z) end
  local keys = it[11]
  if #keys > 0 then
    local args = {}
    for i, kv in ipairs(keys) do
      args[2 * i - 1] = kv[1]
      args[2 * i] = kv[2]
    end
    redis.call('ZADD', z, unpack(args))
    redis.call('ZREMRANGEBYRANK', z, 0, -4097)
  end
end
return 1
"""

# ARGV: prefix, event, old, new, primary. Returns {1 (won) | 0, active provider after the call}.
_SWITCH_FEED = r"""
local key = ARGV[1] .. 'feed:route:' .. ARGV[2]
local cur = redis.call('HGET', key, 'a') or ARGV[5]
if cur ~= ARGV[3] then return {0, cur} end
redis.call('HSET', key, 'a', ARGV[4])
return {1, ARGV[4]}
"""


def _echo(listeners: list[Callable[[MarketState], None]], results: Sequence[WriteResult]) -> None:
    for res in results:
        if res.applied and res.after is not None:
            for listener in listeners:
                listener(res.after)


def _list(value: Any) -> list[Any]:
    """cjson encodes an empty Lua table as ``{}``."""
    return value if isinstance(value, list) else []


_LIST_EVENT = r"""
local ids = redis.call('SMEMBERS', KEYS[1])
table.sort(ids)
local out = {}
for k, mid in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[1] .. 'mkt:' .. mid, 'v', 'st', 'rs', 'b')
  out[k] = {f[1], f[2], f[3], f[4]}
end
return out
"""


class _Line:
    """One connection of :class:`_OrderedCalls`: its calls not answered yet, oldest first, and the task
    reading their answers as they arrive."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.unread: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.reader: asyncio.Task[None] | None = None  # reads while the connection lives


class _OrderedCalls:
    """Calls of one script on a connection of their own, sent without waiting for the previous answer.

    Redis runs the commands of one connection in the order it receives them, and each script call is
    atomic, so calls sent one after another run exactly as if each had waited for the one before; the
    answers come back in the same order. What this buys: the feed pipeline sends a chunk's price writes
    part by part while it judges the rest, and Redis runs each part at once, instead of when the pipeline
    next yields to read the previous answer (which, judging without yields, was mostly at the end of the
    chunk: docs/odds-pipeline.md, tenth round).

    - The script is sent whole (EVAL, not EVALSHA): a NOSCRIPT answer to one call, after a SCRIPT FLUSH,
      would be followed by calls that ran (another client may load the script meanwhile), and a retry of
      the failed call would then run after later ones. Redis caches the compiled script by its hash, so a
      call costs the hash of its text (~5 KB) and those bytes on the wire, about 0.1 µs per price write.
    - A task reads the answers as they arrive (whenever the event loop runs), so an answer Redis sent is
      kept even if the connection ends before its caller asks for it; it reads while idle too, so a
      connection the server closed while idle is replaced before the next send, not failed by it.
    - A script error answers its own call only (the connection stays in step).
    - A connection error fails every call not answered yet, their outcome unknown (the writes may or may not
      have run), and drops the connection. Until a caller has read one of those failures, the next send
      fails too, unsent: nothing sent after a call of unknown outcome runs before its caller has seen the
      failure. Then sends open a new connection.
    """

    def __init__(self, client: aioredis.Redis[bytes], script: str, name: str) -> None:
        self._client = client
        self._script = script
        self.name = name  # the connection's CLIENT SETNAME: an operator's CLIENT LIST shows whose it is
        self._line: _Line | None = None
        self._lost: BaseException | None = None

    async def send(self, args: Sequence[Any]) -> asyncio.Future[Any]:
        if self._lost is not None:
            lost, self._lost = self._lost, None
            raise lost
        line = self._line
        if line is None:
            line = await self._open()
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        line.unread.append(answer)  # before the write: an answer is only read after its own send
        try:
            # No health check: its PING would read an answer of ours as its own.
            command = line.conn.pack_command("EVAL", self._script, 0, *args)
            await line.conn.send_packed_command(command, check_health=False)
        except BaseException as exc:
            line.unread.remove(answer)  # this call's failure is the caller's (raised here), not a lost answer
            answer.cancel()
            await self._broken(line, exc)
            raise
        return answer

    async def _open(self) -> _Line:
        conn = await self._client.connection_pool.get_connection()
        try:
            await conn.send_command("CLIENT", "SETNAME", self.name, check_health=False)
            await conn.read_response()
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            await self._client.connection_pool.release(conn)
            raise
        line = self._line = _Line(conn)
        line.reader = asyncio.create_task(self._read(line), name=f"redis-answers-{self.name}")
        return line

    async def answer(self, call: asyncio.Future[Any]) -> Any:
        try:
            return await asyncio.shield(call)  # a cancelled caller leaves the answer to the reader
        except BaseException as exc:
            if exc is self._lost:  # a caller has seen the loss: the next send need not fail for it
                self._lost = None
            raise

    async def _read(self, line: _Line) -> None:
        """Reads answers for as long as the connection lives, idle too: a connection the server closes
        while idle (its ``timeout``, a restart) is dropped then, so the next send opens a new one instead of
        failing."""
        while True:
            try:
                value = await line.conn.read_response()
            except aioredis.ResponseError as exc:  # this call's script failed: the connection is in step
                if not line.unread:
                    await self._broken(line, exc)
                    return
                _settle(line.unread.popleft(), error=exc)
                continue
            except BaseException as exc:
                await self._broken(line, exc)
                return
            if not line.unread:  # an answer to nothing sent: the connection is out of step
                await self._broken(line, RedisConnectionError("unexpected answer on the price connection"))
                return
            _settle(line.unread.popleft(), value)

    async def _broken(self, line: _Line, exc: BaseException) -> None:
        """Every call of ``line`` not answered fails with ``exc``; the connection is dropped."""
        if line.unread:
            self._lost = exc
        while line.unread:
            _settle(line.unread.popleft(), error=exc)
        if self._line is line:
            self._line = None
        with contextlib.suppress(Exception):
            await line.conn.disconnect(nowait=True)
        with contextlib.suppress(Exception):
            await self._client.connection_pool.release(line.conn)

    async def close(self) -> None:
        """Calls not answered yet fail with "closed" (not with the reader's cancellation)."""
        line, self._line = self._line, None
        if line is None:
            return
        await self._broken(line, RedisConnectionError("closed"))
        if line.reader is not None:
            line.reader.cancel()
            with contextlib.suppress(BaseException):
                await line.reader
        self._lost = None


def _settle(call: asyncio.Future[Any], value: Any = None, error: BaseException | None = None) -> None:
    if call.done():
        return
    if error is not None:
        call.set_exception(error)
    else:
        call.set_result(value)


class _SentPriceWrites:
    """:class:`inplay.ports.SentPrices` of :meth:`RedisOddsCache.send_prices`."""

    def __init__(
        self,
        calls: _OrderedCalls,
        call: asyncio.Future[Any],
        last: _LastWritten,
        listeners: list[Callable[[MarketState], None]],
        writes: Sequence[PriceWrite],
        held: list[MarketState | None],
    ) -> None:
        self._calls, self._call, self._last, self._listeners = calls, call, last, listeners
        self._writes, self._held = writes, held

    async def results(self) -> list[WriteResult]:
        raw = fastjson.loads(await self._calls.answer(self._call))
        result = self._last.result
        out = [result(w, row, h) for w, row, h in zip(self._writes, raw, self._held, strict=True)]
        _echo(self._listeners, out)
        return out


class RedisOddsCache:
    """:class:`inplay.ports.LiveOddsCache` on Redis (redis.asyncio, Lua scripts)."""

    def __init__(self, client: aioredis.Redis[bytes], prefix: str, url: str = "") -> None:
        self._r = client
        self.prefix = prefix
        self._url = url
        self._write_prices = client.register_script(_WRITE_PRICES)
        self._write_status = client.register_script(_WRITE_STATUS)
        self._list_event = client.register_script(_LIST_EVENT)
        self._load_feed = client.register_script(_LOAD_FEED)
        self._save_feed = client.register_script(_SAVE_FEED)
        self._switch_feed = client.register_script(_SWITCH_FEED)
        # Called with every state this process wrote (the in-process read cache reads its own writes).
        self.local_listeners: list[Callable[[MarketState], None]] = []
        self._last = _LastWritten()
        # Feed price writes: sent in order on a connection of their own, several in flight (send_prices).
        self._price_calls = _OrderedCalls(client, _WRITE_PRICES, f"inplay-prices-{self._last.writer}")

    @classmethod
    async def connect(cls, url: str, prefix: str = "inplay:") -> RedisOddsCache:
        client = aioredis.Redis.from_url(url, decode_responses=False)
        await client.ping()
        return cls(client, prefix, url)

    async def close(self) -> None:
        await self._price_calls.close()
        await _aclose(self._r)

    @property
    def client(self) -> aioredis.Redis[bytes]:
        return self._r

    def channel(self, event_id: str) -> str:
        return f"{self.prefix}odds:{event_id}"

    # --- reads ---------------------------------------------------------------------------------------------

    async def get_markets(self, market_ids: Sequence[str]) -> list[MarketState | None]:
        if not market_ids:
            return []
        pipe = self._r.pipeline(transaction=False)
        for mid in market_ids:
            pipe.hmget(f"{self.prefix}mkt:{mid}", ["v", "st", "rs", "b"])
        rows = await pipe.execute()
        return [_state_from_fields(*row) for row in rows]

    async def list_event_markets(self, event_id: str) -> list[MarketState]:
        rows = await self._list_event(keys=[f"{self.prefix}ev:{event_id}"], args=[self.prefix])
        states = [_state_from_fields(*row) for row in rows]
        return [s for s in states if s is not None]

    async def markets_in_scope(self, scope: str, target: str) -> list[str]:
        key = f"{self.prefix}{'ev' if scope == 'event' else 'sp'}:{target}"
        return sorted(_text(m) for m in await self._r.smembers(key))

    # --- writes --------------------------------------------------------------------------------------------

    async def put_markets(self, markets: Sequence[MarketState]) -> list[CacheWrite]:
        if not markets:
            return []
        items: list[Any] = []
        for m in markets:
            body = encode_body(
                m.market_id,
                m.event_id,
                m.sport,
                m.market_type,
                m.name,
                m.in_play,
                m.selections,
                m.updated_at_ms,
                m.source,
            )
            items.append(
                [
                    m.market_id,
                    m.event_id,
                    m.sport,
                    str(m.updated_at_ms),
                    body,
                    "",
                    0,
                    "put",
                    m.version,
                    int(m.status),
                    m.status_reason,
                ]
            )
        raw = fastjson.loads(await self._write_prices(keys=[], args=[self.prefix, _pack(items)]))
        out = [CacheWrite(row[0] == "APPLIED", int(row[5])) for row in raw]
        for m, w in zip(markets, out, strict=True):
            if w.applied:
                for listener in self.local_listeners:
                    listener(m)
        return out

    async def write_prices(self, writes: Sequence[PriceWrite]) -> list[WriteResult]:
        if not writes:
            return []
        return await (await self.send_prices(writes)).results()

    async def send_prices(self, writes: Sequence[PriceWrite]) -> SentPrices:
        if not writes:
            return AnsweredPrices([])
        # The held states are taken now: an answer "the body you hold" names the held version sent here.
        held = self._last.held(writes)
        packed = encode_price_items(writes, [h.version if h is not None else 0 for h in held])
        if packed is None:  # a number beyond 64 bits: the reference encoder (the same text otherwise)
            packed = _pack([_price_item(w, _body_of(w), h) for w, h in zip(writes, held, strict=True)])
        call = await self._price_calls.send((self.prefix, packed, self._last.writer))
        return _SentPriceWrites(self._price_calls, call, self._last, self.local_listeners, writes, held)

    async def write_status(self, writes: Sequence[StatusWrite]) -> list[WriteResult]:
        if not writes:
            return []
        args: list[Any] = [self.prefix, len(writes)]
        for w in writes:
            args += [
                w.market_id,
                int(w.status),
                w.reason,
                w.source_ts_ms,
                ",".join(w.only_reasons),
                w.provider,
                w.provider_ts_ms or w.source_ts_ms,
            ]
        raw = fastjson.loads(await self._write_status(keys=[], args=args))
        out = []
        for row in raw:
            outcome = _text(row[0])
            body_text = _text(row[4])
            if not body_text:
                out.append(WriteResult(outcome, None, None))
                continue
            body = fastjson.loads(body_text)
            before = decode_state(body, int(row[1]), int(row[2]), _text(row[3]))
            after = decode_state(body, int(row[5]), int(row[6]), _text(row[7])) if outcome == "APPLIED" else None
            out.append(WriteResult(outcome, before, after))
        _echo(self.local_listeners, out)
        return out

    async def set_kill_switch(self, scope: str, target: str, engaged: bool) -> list[str]:
        key = f"{self.prefix}ks:{scope}:{target}"
        if engaged:
            await self._r.set(key, b"1")
        else:
            await self._r.delete(key)
        return await self.markets_in_scope(scope, target)

    async def kill_switch_engaged(self, event_id: str, sport: str) -> bool:
        n = await self._r.exists(f"{self.prefix}ks:event:{event_id}", f"{self.prefix}ks:sport:{sport}")
        return int(n) > 0

    # --- shared feed state ---------------------------------------------------------------------------------

    async def load_feed_state(
        self, providers: Collection[str], probes: Mapping[str, Sequence[tuple[int, int]]], events: Collection[str]
    ) -> FeedStateView:
        names = list(providers)
        req = [[[n, [f"{s}:{t}" for s, t in probes.get(n, ())]] for n in names], list(events)]
        provs, routes = fastjson.loads(await self._load_feed(keys=[], args=[self.prefix, _pack(req)]))
        view = FeedStateView({}, {}, {})
        for row in _list(provs):
            name = row[0]
            n = [int(x) for x in row[1:9]]
            view.providers[name] = ProviderLiveness(
                name,
                n[0],
                n[1],
                n[2],
                n[3],
                n[4],
                n[5],
                n[6],
                n[7],
                str(row[10]),
                int(row[11]),
                str(row[12]),
                int(row[13]),
            )
            view.seen[name] = {(int(a), int(b)) for a, b in (k.split(":") for k in _list(row[9]))}
        for ev, active in zip(events, _list(routes), strict=True):
            view.active[ev] = active
        return view

    async def save_feed_state(
        self,
        providers: Sequence[ProviderLiveness],
        seen: Mapping[str, Sequence[tuple[int, int]]],
        reset: Collection[str] = (),
    ) -> None:
        items = [
            [
                h.name,
                h.last_seen_ms,
                h.lag_ms,
                h.lag_at_ms,
                h.lag_bad_at_ms,
                h.gap_at_ms,
                h.reconnected_at_ms,
                h.last_seq,
                h.max_ts_ms,
                1 if h.name in reset else 0,
                [[s, f"{s}:{t}"] for s, t in seen.get(h.name, ())],
                h.producer,
                h.producer_at_ms,
                h.recovery_id,
                h.down_since_ms,
            ]
            for h in providers
        ]
        if items:
            await self._save_feed(keys=[], args=[self.prefix, _pack(items)])

    async def list_producers(self) -> list[ProviderLiveness]:
        names = sorted(_text(n) for n in await self._r.smembers(f"{self.prefix}feed:providers"))
        view = await self.load_feed_state(names, {}, [])
        return [view.providers[n] for n in names]

    async def switch_provider(self, event_id: str, old: str, new: str, primary: str) -> tuple[bool, str]:
        won, active = await self._switch_feed(keys=[], args=[self.prefix, event_id, old, new, primary])
        return bool(int(won)), _text(active)

    # --- fan-out -------------------------------------------------------------------------------------------

    def open_subscription(self) -> RedisOddsSubscription:
        return RedisOddsSubscription(self._r, self.prefix)

    async def subscribe(self, event_ids: Sequence[str]) -> AsyncIterator[MarketState]:
        sub = self.open_subscription()
        try:
            await sub.add(event_ids)
            async for notice in sub:
                yield notice.state
        finally:
            await sub.close()


class RedisOddsSubscription:
    """One pub/sub connection for any number of event channels (the StreamOdds hub holds one per
    process). A reader task parses messages into a bounded queue; ``add`` returns once Redis confirmed
    the subscription. A lost connection ends the iteration with ``ConnectionError`` (the hub reopens and
    resynchronizes its clients with a SNAPSHOT)."""

    def __init__(self, client: aioredis.Redis[bytes], prefix: str, queue_size: int = 10_000) -> None:
        self._pubsub = client.pubsub()
        self._prefix = prefix
        self._queue: asyncio.Queue[OddsNotice | BaseException] = asyncio.Queue(queue_size)
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._lock = asyncio.Lock()

    def _channel(self, event_id: str) -> str:
        return f"{self._prefix}odds:{event_id}"

    async def add(self, event_ids: Sequence[str]) -> None:
        channels = [self._channel(e) for e in event_ids]
        if not channels:
            return
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        async with self._lock:
            for ch in channels:
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(ch, []).append(fut)
                futures.append(fut)
            await self._pubsub.subscribe(*channels)
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(), name="odds-subscription")
        await asyncio.wait_for(asyncio.gather(*futures), timeout=10)

    async def remove(self, event_ids: Sequence[str]) -> None:
        channels = [self._channel(e) for e in event_ids]
        if channels and not self._closed:
            async with self._lock:
                await self._pubsub.unsubscribe(*channels)

    async def _read(self) -> None:
        try:
            while not self._closed:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                if msg is None:
                    continue
                kind = _text(msg.get("type"))
                if kind == "message":
                    await self._queue.put(decode_notice(msg["data"]))
                elif kind == "subscribe":
                    for fut in self._waiters.pop(_text(msg.get("channel")), []):
                        if not fut.done():
                            fut.set_result(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # connection lost: end the iteration with the error
            for futs in self._waiters.values():
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(ConnectionError(str(exc)))
            self._waiters.clear()
            await self._queue.put(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))

    def __aiter__(self) -> AsyncIterator[OddsNotice]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[OddsNotice]:
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        with contextlib.suppress(Exception):
            await _aclose(self._pubsub)


# --- feed mapping table ------------------------------------------------------------------------------------


# Compare-and-set of mapping events. ARGV: prefix, JSON [[event_id, expected_rev, doc JSON or "" (= delete)],
# ...]. Every expected revision must still hold (0 = absent), else nothing is written and the conflicting
# event ids are returned. Writes bump each event's revision (kept inside its stored doc as "rev" too), the
# table version, and PUBLISH [[event_id, rev], ...] on {p}feed:mapping:changes (every process follows it).
_MAPPING_CAS = r"""
local p = ARGV[1]
local items = cjson.decode(ARGV[2])
local docs, revs = p .. 'feed:mapping:events', p .. 'feed:mapping:revs'
local conflicts = {}
for k = 1, #items do
  local cur = tonumber(redis.call('HGET', revs, items[k][1])) or 0
  if cur ~= tonumber(items[k][2]) then conflicts[#conflicts + 1] = items[k][1] end
end
if #conflicts > 0 then return cjson.encode({0, conflicts}) end
local changed = {}
for k = 1, #items do
  local eid, doc = items[k][1], items[k][3]
  local rev = redis.call('HINCRBY', revs, eid, 1)
  if doc == '' then
    redis.call('HDEL', docs, eid)
  else
    redis.call('HSET', docs, eid, '{"rev":' .. rev .. ',' .. string.sub(doc, 2))
  end
  changed[#changed + 1] = {eid, rev}
end
local version = redis.call('INCR', p .. 'feed:mapping:version')
redis.call('PUBLISH', p .. 'feed:mapping:changes', cjson.encode({version, changed}))
return cjson.encode({1, changed})
"""


class RedisFeedMappings:
    """The provider-id mapping table (see :mod:`inplay.domain.feed.mapping`), stored **per event** (M7):
    hash ``{prefix}feed:mapping:events`` (event id -> its JSON entry, with its revision ``rev``) beside
    ``{prefix}feed:mapping:revs`` (event id -> revision; a deleted event keeps its revision so that a stale
    writer cannot resurrect it). Writes are compare-and-set per event (one Lua call), so two processes
    updating different events never lose each other's change, and one updating the same event retries on
    the newer entry. ``{prefix}feed:mapping:version`` counts writes (cheap to poll) and every write is
    published on ``{prefix}feed:mapping:changes`` for running processes. The old single-document key
    ``{prefix}feed:mapping`` is read when no per-event entry exists yet (the next write moves it)."""

    def __init__(self, client: aioredis.Redis[bytes], prefix: str) -> None:
        self._r = client
        self._prefix = prefix
        self._legacy = f"{prefix}feed:mapping"
        self._docs = f"{prefix}feed:mapping:events"
        self._revs = f"{prefix}feed:mapping:revs"
        self._version_key = f"{prefix}feed:mapping:version"
        self.channel = f"{prefix}feed:mapping:changes"
        self._cas = client.register_script(_MAPPING_CAS)

    @classmethod
    async def connect(cls, url: str, prefix: str = "inplay:") -> RedisFeedMappings:
        client = aioredis.Redis.from_url(url, decode_responses=False)
        await client.ping()
        return cls(client, prefix)

    async def put_events(
        self, events: Sequence[dict[str, Any]], expected: Mapping[str, int], removed: Sequence[str] = ()
    ) -> tuple[bool, list[tuple[str, int]]]:
        items: list[list[Any]] = [[str(e["event_id"]), expected.get(str(e["event_id"]), 0), _entry(e)] for e in events]
        items += [[eid, expected.get(eid, 0), ""] for eid in removed]
        if not items:
            return True, []
        ok, detail = fastjson.loads(await self._cas(keys=[], args=[self._prefix, _pack(items)]))
        if not ok:
            return False, [(_text(eid), -1) for eid in _list(detail)]
        return True, [(_text(eid), int(rev)) for eid, rev in _list(detail)]

    async def snapshot(self) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        """Every event entry and every revision (deleted events included), in one round trip."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hgetall(self._docs)
        pipe.hgetall(self._revs)
        pipe.get(self._legacy)
        docs, revs, legacy = await pipe.execute()
        events = {_text(k): fastjson.loads(v) for k, v in docs.items()}
        if not events and not revs and legacy is not None:  # written by the one-document store
            events = {str(e["event_id"]): e for e in fastjson.loads(legacy).get("events", [])}
        return events, {_text(k): int(v) for k, v in revs.items()}

    async def events(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """The current entries of ``event_ids`` (None: deleted or never stored)."""
        if not event_ids:
            return {}
        raw = await self._r.hmget(self._docs, list(event_ids))
        return {eid: (fastjson.loads(v) if v is not None else None) for eid, v in zip(event_ids, raw, strict=True)}

    async def version(self) -> int:
        raw = await self._r.get(self._version_key)
        return int(raw) if raw is not None else 0

    async def load(self) -> dict[str, Any] | None:
        events, revs = await self.snapshot()
        if not events and not revs:
            return None
        return {"events": [events[k] for k in sorted(events)]}

    async def changes(self) -> AsyncIterator[tuple[int, list[tuple[str, int]]]]:
        """Every write's (table version, [(event id, revision), ...]), from the moment of the call, until
        cancelled. A lost connection ends the iteration (the caller reloads and follows again)."""
        pubsub = self._r.pubsub()
        await pubsub.subscribe(self.channel)
        try:
            async for msg in pubsub.listen():
                if msg.get("type") != "message":
                    continue
                version, changed = fastjson.loads(msg["data"])
                yield int(version), [(_text(eid), int(rev)) for eid, rev in changed]
        finally:
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe(self.channel)
            with contextlib.suppress(Exception):
                await _aclose(pubsub)

    async def close(self) -> None:
        await _aclose(self._r)


def _entry(event: dict[str, Any]) -> str:
    """An event's JSON without a previous revision (the script puts the new one first)."""
    return _compact({k: v for k, v in event.items() if k != "rev"})


__all__ = [
    "RedisFeedMappings",
    "RedisOddsCache",
    "RedisOddsSubscription",
    "decode_notice",
    "decode_state",
    "encode_body",
]
