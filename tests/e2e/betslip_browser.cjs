// Drives the web bet slip in Debian's chromium (playwright-core, headless) through Envoy.
//
// Protocol with the pytest side (tests/e2e/test_web_betslip.py), JSON lines:
//   stdout  {"need": "move", "market": M, "selection": S, "from": "2.10"}   -> the test moves that price
//   stdin   {"ok": true}                                                   <- once the feed took the move
//   stdout  {"done": true, ...observations}  or  {"error": "..."}
// Env: BASE_URL, EVENT_ID, USER_NAME, SCREENSHOT_DIR, WEB_DIR (for node_modules), CHROMIUM (default
// /usr/bin/chromium).
"use strict";

const path = require("node:path");
const readline = require("node:readline");
const fs = require("node:fs");

const { chromium } = require(path.join(process.env.WEB_DIR, "node_modules", "playwright-core"));

const BASE_URL = process.env.BASE_URL;
const EVENT_ID = process.env.EVENT_ID;
const USER_NAME = process.env.USER_NAME || "alice";
const SHOTS = process.env.SCREENSHOT_DIR;
const TIMEOUT = 15000;

const lines = readline.createInterface({ input: process.stdin });
const pending = [];
lines.on("line", (line) => {
  const waiter = pending.shift();
  if (waiter) waiter(JSON.parse(line));
});
function ask(msg) {
  return new Promise((resolve) => {
    pending.push(resolve);
    process.stdout.write(JSON.stringify(msg) + "\n");
  });
}
function log(...args) {
  process.stderr.write(args.join(" ") + "\n");
}

async function main() {
  const userDataDir = fs.mkdtempSync(path.join(require("node:os").tmpdir(), "inplay-chromium-"));
  // A fresh profile per run (launchPersistentContext is how playwright takes --user-data-dir).
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1180, height: 760 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const out = { consoleErrors: [] };
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (m) => {
      if (m.type() === "error") out.consoleErrors.push(m.text());
    });
    page.on("pageerror", (e) => out.consoleErrors.push(String(e)));
    await page.goto(`${BASE_URL}/?event=${encodeURIComponent(EVENT_ID)}`);

    // Log in as a demo user (token from the dev-only /dev/tokens.json).
    await page.getByTestId(`login-${USER_NAME}`).click({ timeout: TIMEOUT });
    await page.getByTestId("who").filter({ hasText: USER_NAME }).waitFor({ timeout: TIMEOUT });
    await page.getByTestId("balance").filter({ hasText: /\d+\.\d\d/ }).waitFor({ timeout: TIMEOUT });
    out.balanceBefore = await page.getByTestId("balance").innerText();

    // Live odds: the markets of the event arrive over gRPC-web server streaming.
    await page.getByTestId("stream-state").filter({ hasText: "live" }).waitFor({ timeout: TIMEOUT });
    const firstSel = page.locator(".market .sel").first();
    await firstSel.waitFor({ timeout: TIMEOUT });
    out.markets = await page.getByTestId("market").count();
    const market = await firstSel.evaluate((el) => el.closest(".market").dataset.market);
    const selection = await firstSel.getAttribute("data-selection");
    const price = firstSel.getByTestId("price");
    const before = await price.innerText();

    // 1. A price moves on the feed: the button updates in place (no reload, same element).
    await firstSel.evaluate((el) => (el.dataset.marker = "same-element"));
    await ask({ need: "move", market, selection, from: before });
    await page.waitForFunction(
      ([m, s, old]) => {
        const el = document.querySelector(`[data-market="${m}"] [data-selection="${s}"] .price`);
        return el && el.textContent !== old;
      },
      [market, selection, before],
      { timeout: TIMEOUT },
    );
    out.priceBefore = before;
    out.priceAfter = await price.innerText();
    out.updatedInPlace = (await firstSel.getAttribute("data-marker")) === "same-element";
    log(`price ${before} -> ${out.priceAfter}`);

    // 2. Pick that price, then it moves again (beyond tolerance) before the bet is placed.
    await firstSel.click();
    await page.getByTestId("slip-odds").filter({ hasText: out.priceAfter }).waitFor({ timeout: TIMEOUT });
    await page.getByTestId("stake").fill("2.50");
    await ask({ need: "move", market, selection, from: out.priceAfter });
    await page.getByTestId("slip-live").filter({ hasText: "now" }).waitFor({ timeout: TIMEOUT });
    out.slipLive = await page.getByTestId("slip-live").innerText();

    // 3. Place at the stale price: rejected with ODDS_CHANGED and the new price offered.
    await page.getByTestId("place").click();
    await page.getByTestId("rejected").waitFor({ timeout: TIMEOUT });
    out.rejectedReason = await page.getByTestId("reason").innerText();
    out.oddsChanged = await page.getByTestId("odds-changed").innerText();
    await page.screenshot({ path: path.join(SHOTS, "betslip-odds-changed.png"), fullPage: true });

    // 4. Take the offered price: accepted.
    await page.getByTestId("take-price").click();
    await page.getByTestId("accepted").waitFor({ timeout: TIMEOUT });
    out.accepted = await page.getByTestId("accepted").innerText();
    out.betId = (await page.getByTestId("bet-id").innerText()).replace(/^bet\s+/, "");
    await page
      .getByTestId("balance")
      .filter({ hasNotText: out.balanceBefore })
      .waitFor({ timeout: TIMEOUT })
      .catch(() => undefined);
    out.balanceAfter = await page.getByTestId("balance").innerText();
    await page.screenshot({ path: path.join(SHOTS, "betslip-accepted.png"), fullPage: true });
    out.done = true;
  } catch (err) {
    out.error = String(err && err.stack ? err.stack : err);
    try {
      const pages = context.pages();
      if (pages[0]) await pages[0].screenshot({ path: path.join(SHOTS, "betslip-failure.png"), fullPage: true });
    } catch {}
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(out) + "\n");
  lines.close();
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ error: String(err) }) + "\n");
  process.exit(1);
});
