// Inplay web bet slip: live odds over gRPC-web server streaming (OddsService.StreamOdds) and bet placement
// (BetService.PlaceBet), all through Envoy on the page's own origin. The bearer token is the only identity the
// page sends; Envoy verifies it and the services never see anything else.

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb";
import { AcceptancePolicy, BetService, OddsChangedSchema, type Bet } from "../gen/inplay/bets/v1/bets_pb";
import { OddsService, UpdateKind, type Market } from "../gen/inplay/odds/v1/odds_pb";
import { MarketStatus, type Odds } from "../gen/inplay/type/v1/types_pb";
import { WalletService } from "../gen/inplay/wallet/v1/wallet_pb";

// ------------------------------------------------------------------------------------------------ transport

const TOKEN_KEY = "inplay.token";
let token = sessionStorage.getItem(TOKEN_KEY) ?? "";

const withToken: Interceptor = (next) => async (req) => {
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};
const transport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: [withToken] });
const oddsClient = createClient(OddsService, transport);
const betClient = createClient(BetService, transport);
const walletClient = createClient(WalletService, transport);

// ---------------------------------------------------------------------------------------------------- state

interface Pick {
  marketId: string;
  selectionId: string;
  marketName: string;
  selectionName: string;
  seen: Odds; // the price the bettor saw and bets at
}

const markets = new Map<string, Market>();
let pick: Pick | null = null;
let currency = "EUR";
let stream: AbortController | null = null;
let placing = false;

// ------------------------------------------------------------------------------------------------- helpers

function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el;
}

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else el.setAttribute(k, v);
  }
  el.append(...children);
  return el;
}

/** Minor units -> "12.34" (bigint only: never a float on the money path). */
function formatMoney(minor: bigint): string {
  const neg = minor < 0n;
  const abs = neg ? -minor : minor;
  return `${neg ? "-" : ""}${abs / 100n}.${(abs % 100n).toString().padStart(2, "0")}`;
}

/** "12.3" -> 1230n; null when not a non-negative amount with at most 2 decimals. */
function parseMoney(text: string): bigint | null {
  const m = /^\s*(\d{1,9})(?:[.,](\d{1,2}))?\s*$/.exec(text);
  if (!m) return null;
  return BigInt(m[1]) * 100n + BigInt((m[2] ?? "").padEnd(2, "0"));
}

function oddsText(o: Odds | undefined): string {
  if (!o) return "-";
  if (o.decimal) return o.decimal;
  // Display fallback only (the server fills `decimal`): two decimals, half up, from the exact fraction.
  const hundredths = (o.numerator * 200n + o.denominator) / (2n * o.denominator);
  return formatMoney(hundredths);
}

function sameOdds(a: Odds | undefined, b: Odds | undefined): boolean {
  return !!a && !!b && a.numerator * b.denominator === b.numerator * a.denominator;
}

function compareOdds(a: Odds, b: Odds): number {
  const l = a.numerator * b.denominator;
  const r = b.numerator * a.denominator;
  return l === r ? 0 : l > r ? 1 : -1;
}

function subjectOf(jwt: string): string {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const payload = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="))) as {
      sub?: string;
    };
    return payload.sub ?? "?";
  } catch {
    return "?";
  }
}

function setStreamState(text: string, cls = ""): void {
  const el = $("stream-state");
  el.textContent = text;
  el.className = `pill ${cls}`;
}

// ------------------------------------------------------------------------------------------------- session

async function loadDevUsers(): Promise<void> {
  const box = $("demo-users");
  try {
    const resp = await fetch("/dev/tokens.json", { cache: "no-store" });
    if (!resp.ok) {
      box.append(h("span", { class: "hint" }, "No dev tokens on this server: paste one."));
      return;
    }
    const body = (await resp.json()) as { users: { sub: string; token: string }[]; event_id?: string };
    for (const u of body.users) {
      const b = h("button", { "data-testid": `login-${u.sub}` }, `Log in as ${u.sub}`);
      b.addEventListener("click", () => void login(u.token));
      box.append(b);
    }
    const input = $("event-id") as HTMLInputElement;
    if (body.event_id && !input.value) input.value = body.event_id;
  } catch {
    box.append(h("span", { class: "hint" }, "Could not load dev tokens."));
  }
}

async function login(newToken: string): Promise<void> {
  token = newToken.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $("who").textContent = subjectOf(token);
  $("logout").hidden = false;
  $("login").hidden = true;
  await refreshBalance();
  const ev = ($("event-id") as HTMLInputElement).value.trim();
  if (ev) watch(ev);
}

function logout(): void {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  stream?.abort();
  $("who").textContent = "not logged in";
  $("balance").textContent = "";
  $("logout").hidden = true;
  $("login").hidden = false;
  setStreamState("idle");
}

async function refreshBalance(): Promise<void> {
  try {
    const resp = await walletClient.getBalance({});
    if (resp.balance) {
      currency = resp.balance.currency || currency;
      $("currency").textContent = currency;
      $("balance").textContent = `${formatMoney(resp.balance.amountMinor)} ${currency}`;
    }
  } catch (err) {
    const e = ConnectError.from(err);
    if (e.code === Code.Unauthenticated) {
      showResult(h("div", { class: "result rejected" }, `Log in again: ${e.rawMessage}`));
      logout();
    } else {
      $("balance").textContent = "balance unavailable";
    }
  }
}

// ------------------------------------------------------------------------------------------------ live odds

function watch(eventId: string): void {
  stream?.abort();
  const ctrl = new AbortController();
  stream = ctrl;
  markets.clear();
  $("markets").replaceChildren();
  const url = new URL(location.href);
  url.searchParams.set("event", eventId);
  history.replaceState(null, "", url);
  void streamLoop(eventId, ctrl.signal);
}

async function streamLoop(eventId: string, signal: AbortSignal): Promise<void> {
  let backoffMs = 250;
  while (!signal.aborted) {
    setStreamState("connecting");
    try {
      // On reconnect, tell the server what we hold: it sends a snapshot only for what is stale.
      const knownVersions: Record<string, bigint> = {};
      for (const m of markets.values()) knownVersions[m.marketId] = m.version;
      for await (const msg of oddsClient.streamOdds({ eventIds: [eventId], knownVersions }, { signal })) {
        backoffMs = 250;
        setStreamState(msg.kind === UpdateKind.SNAPSHOT ? "live · snapshot" : "live", "live");
        for (const m of msg.markets) applyMarket(m);
        if (msg.kind === UpdateKind.SNAPSHOT && msg.markets.length === 0 && markets.size === 0) {
          $("markets").replaceChildren(h("p", { class: "hint" }, `No markets for event ${eventId}.`));
        }
      }
      if (signal.aborted) return;
      setStreamState("stream ended: reconnecting");
    } catch (err) {
      if (signal.aborted) return;
      const e = ConnectError.from(err);
      if (e.code === Code.Unauthenticated) {
        setStreamState("not authenticated", "error");
        logout();
        return;
      }
      setStreamState(`${Code[e.code]}: reconnecting`, "error");
    }
    await new Promise((r) => setTimeout(r, backoffMs));
    backoffMs = Math.min(backoffMs * 2, 5000);
  }
}

function applyMarket(m: Market): void {
  const prev = markets.get(m.marketId);
  if (prev && prev.version > m.version) return; // never go back in time
  markets.set(m.marketId, m);
  const container = $("markets");
  container.querySelector(":scope > p.hint")?.remove();
  let card = container.querySelector<HTMLElement>(`[data-market="${CSS.escape(m.marketId)}"]`);
  if (!card) {
    card = h(
      "div",
      { class: "market", "data-market": m.marketId, "data-testid": "market" },
      h("div", { class: "market-head" }, h("span", { class: "market-name" }), h("span", { class: "market-status" })),
      h("div", { class: "selections" }),
    );
    container.append(card);
  }
  const open = m.status === MarketStatus.ACTIVE;
  card.classList.toggle("suspended", !open);
  card.querySelector(".market-name")!.textContent = m.name || m.marketId;
  card.querySelector(".market-status")!.textContent = open
    ? m.inPlay
      ? "in play"
      : "pre-match"
    : `${MarketStatus[m.status] ?? "?"}${m.statusReason ? ` · ${m.statusReason}` : ""}`;
  const list = card.querySelector<HTMLElement>(".selections")!;
  for (const s of m.selections) {
    let btn = list.querySelector<HTMLButtonElement>(`[data-selection="${CSS.escape(s.selectionId)}"]`);
    if (!btn) {
      btn = h(
        "button",
        {
          class: "sel",
          "data-selection": s.selectionId,
          "data-testid": `sel-${m.marketId}-${s.selectionId}`,
        },
        h("span", { class: "name" }),
        h("span", { class: "price", "data-testid": "price" }),
      );
      btn.addEventListener("click", () => choose(m.marketId, s.selectionId));
      list.append(btn);
    }
    const oldOdds = prev?.selections.find((p) => p.selectionId === s.selectionId)?.odds;
    btn.querySelector(".name")!.textContent = s.name || s.selectionId;
    btn.querySelector(".price")!.textContent = oddsText(s.odds);
    btn.dataset.version = m.version.toString();
    btn.disabled = !open;
    if (oldOdds && s.odds && !sameOdds(oldOdds, s.odds)) flash(btn, compareOdds(s.odds, oldOdds) > 0 ? "up" : "down");
    btn.classList.toggle("picked", pick?.marketId === m.marketId && pick.selectionId === s.selectionId);
  }
  updateSlipLive();
}

function flash(el: HTMLElement, cls: "up" | "down"): void {
  el.classList.remove("up", "down");
  void el.offsetWidth; // restart the transition
  el.classList.add(cls);
  window.setTimeout(() => el.classList.remove(cls), 1200);
}

// ------------------------------------------------------------------------------------------------ bet slip

function choose(marketId: string, selectionId: string): void {
  const m = markets.get(marketId);
  const s = m?.selections.find((x) => x.selectionId === selectionId);
  if (!m || !s?.odds) return;
  pick = { marketId, selectionId, marketName: m.name || marketId, selectionName: s.name || selectionId, seen: s.odds };
  document.querySelectorAll(".sel.picked").forEach((el) => el.classList.remove("picked"));
  document
    .querySelector(`[data-market="${CSS.escape(marketId)}"] [data-selection="${CSS.escape(selectionId)}"]`)
    ?.classList.add("picked");
  renderSlip();
  showResult();
}

function renderSlip(): void {
  $("slip-empty").hidden = pick !== null;
  $("slip-body").hidden = pick === null;
  if (!pick) return;
  $("slip-market").textContent = pick.marketName;
  $("slip-selection").textContent = pick.selectionName;
  $("slip-odds").textContent = oddsText(pick.seen);
  updateSlipLive();
}

function currentOdds(p: Pick): Odds | undefined {
  return markets.get(p.marketId)?.selections.find((s) => s.selectionId === p.selectionId)?.odds;
}

function updateSlipLive(): void {
  if (!pick) return;
  const now = currentOdds(pick);
  $("slip-live").textContent = now && !sameOdds(now, pick.seen) ? `(now ${oddsText(now)})` : "";
}

function showResult(...nodes: Node[]): void {
  $("result").replaceChildren(...nodes);
}

async function placeBet(): Promise<void> {
  if (!pick || placing) return;
  const stake = parseMoney(($("stake") as HTMLInputElement).value);
  if (stake === null || stake <= 0n) {
    showResult(h("div", { class: "result rejected" }, "Enter a stake like 2.50"));
    return;
  }
  const policyName = ($("policy") as HTMLSelectElement).value as "NONE" | "HIGHER" | "ANY";
  const policy = AcceptancePolicy[policyName];
  const p = pick;
  // One key per attempt: a network retry of this attempt would reuse it; a new price is a new bet.
  const idempotencyKey = crypto.randomUUID();
  placing = true;
  ($("place") as HTMLButtonElement).disabled = true;
  showResult(h("div", { class: "result" }, "Placing…"));
  try {
    const resp = await betClient.placeBet(
      {
        slip: {
          legs: [
            {
              marketId: p.marketId,
              selectionId: p.selectionId,
              odds: { numerator: p.seen.numerator, denominator: p.seen.denominator },
            },
          ],
          stake: { amountMinor: stake, currency },
          acceptancePolicy: policy,
          idempotencyKey,
        },
      },
      { timeoutMs: 10_000 },
    );
    if (resp.bet) showAccepted(resp.bet, resp.replayed);
  } catch (err) {
    showRejected(ConnectError.from(err), p);
  } finally {
    placing = false;
    ($("place") as HTMLButtonElement).disabled = false;
    void refreshBalance();
  }
}

function showAccepted(bet: Bet, replayed: boolean): void {
  const leg = bet.legs[0];
  showResult(
    h(
      "div",
      { class: "result ok", "data-testid": "accepted" },
      h("strong", {}, replayed ? "Accepted (replayed)" : "Bet accepted"),
      h("div", {}, `at ${oddsText(leg?.odds)} · stake ${formatMoney(bet.stake?.amountMinor ?? 0n)} ${currency}`),
      h("div", {}, `potential return ${formatMoney(bet.potentialReturn?.amountMinor ?? 0n)} ${currency}`),
      h("div", { class: "reason", "data-testid": "bet-id" }, `bet ${bet.betId}`),
    ),
  );
}

function showRejected(e: ConnectError, p: Pick): void {
  const info = e.findDetails(ErrorInfoSchema)[0];
  const changed = e.findDetails(OddsChangedSchema)[0];
  const box = h("div", { class: "result rejected", "data-testid": "rejected" });
  let title = "Bet rejected";
  if (e.code === Code.ResourceExhausted) title = "Too many bets: slow down";
  else if (e.code === Code.Unauthenticated) title = "Not logged in";
  else if (e.code === Code.PermissionDenied) title = "Not allowed";
  else if (e.code === Code.Unavailable || e.code === Code.DeadlineExceeded) title = "Service busy: try again";
  box.append(h("strong", {}, title), h("div", {}, e.rawMessage));
  box.append(h("div", { class: "reason", "data-testid": "reason" }, `${Code[e.code]} · ${info?.reason ?? "no reason"}`));
  if (changed?.current) {
    const offer = changed.current;
    box.append(
      h(
        "div",
        { "data-testid": "odds-changed" },
        `The price moved: you saw ${oddsText(changed.seen ?? p.seen)}, it is now ${oddsText(offer)}.`,
      ),
    );
    const take = h("button", { "data-testid": "take-price" }, `Bet at ${oddsText(offer)}`);
    take.addEventListener("click", () => {
      if (!pick || pick.marketId !== p.marketId || pick.selectionId !== p.selectionId) return;
      pick = { ...pick, seen: offer };
      renderSlip();
      void placeBet();
    });
    box.append(take);
  }
  showResult(box);
}

// ---------------------------------------------------------------------------------------------------- wiring

function init(): void {
  $("event-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = ($("event-id") as HTMLInputElement).value.trim();
    if (id && token) watch(id);
  });
  $("place").addEventListener("click", () => void placeBet());
  $("logout").addEventListener("click", logout);
  $("token-use").addEventListener("click", () => {
    const t = ($("token-input") as HTMLTextAreaElement).value.trim();
    if (t) void login(t);
  });
  const params = new URLSearchParams(location.search);
  const ev = params.get("event");
  if (ev) ($("event-id") as HTMLInputElement).value = ev;
  void loadDevUsers();
  if (token) void login(token);
}

init();
