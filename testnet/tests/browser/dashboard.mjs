// Drives the dashboard in headless Chromium (Debian's, by its path: Playwright
// cannot download its own here) for testnet/tests/dashboard.rs, which sends
// one command per line on stdin and reads one answer per line on stdout:
//   login TOKEN              types the token into the form
//   up N                     waits until N nodes are shown up
//   down NODE_ID             waits until that node is shown down
//   usage AGREEMENT INDEX N  waits until that usage bar shows at least N
//   text TESTID TEXT         waits until that element contains TEXT
//   state-requests           how many /ui/state requests the page made, and over how many ms
//   screenshot PATH          saves a full-page screenshot
//   quit
// Answers: `ok [detail]` or `error <why>`.
// usage: node dashboard.mjs <chromium path> <dashboard URL>
import { chromium } from "playwright-core";
import * as readline from "node:readline";

const [executablePath, url] = process.argv.slice(2);
const WAIT_MS = 30000;
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] });
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const stateRequests = [];
page.on("request", (request) => {
  if (new URL(request.url()).pathname === "/ui/state") stateRequests.push(Date.now());
});
const opened = Date.now();
await page.goto(url);

async function run(command, args) {
  switch (command) {
    case "login":
      await page.fill("#token", args[0]);
      await page.click("#login button[type=submit]");
      await page.waitForSelector("#dashboard:not([hidden])", { timeout: WAIT_MS });
      return "";
    case "up": {
      const want = Number(args[0]);
      await page.waitForFunction(
        (n) => document.querySelectorAll('tr[data-testid^="node-"][data-up="true"]').length === n,
        want, { timeout: WAIT_MS });
      return "";
    }
    case "down": {
      const started = Date.now();
      await page.waitForSelector(`tr[data-testid="node-${args[0]}"][data-up="false"]`, { timeout: WAIT_MS });
      await page.waitForSelector(`circle[data-testid="graph-node-${args[0]}"][data-up="false"]`, { timeout: WAIT_MS });
      return String(Date.now() - started);
    }
    case "usage": {
      const [agreement, index, min] = args;
      const selector = `[data-testid="usage-${agreement}-${index}"]`;
      await page.waitForFunction(
        ([s, m]) => Number(document.querySelector(s)?.getAttribute("data-used")) >= m,
        [selector, Number(min)], { timeout: WAIT_MS });
      return await page.getAttribute(selector, "data-used");
    }
    case "text": {
      const [testid, ...words] = args;
      const wanted = words.join(" ");
      await page.waitForFunction(
        ([id, w]) => (document.querySelector(`[data-testid="${id}"]`)?.textContent || "").includes(w),
        [testid, wanted], { timeout: WAIT_MS });
      return "";
    }
    case "state-requests":
      return `${stateRequests.length} ${Date.now() - opened}`;
    case "screenshot":
      await page.screenshot({ path: args[0], fullPage: true });
      return "";
    default:
      throw new Error(`unknown command ${command}`);
  }
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const [command, ...args] = line.trim().split(/\s+/);
  if (command === "quit") break;
  try {
    const detail = await run(command, args);
    console.log(`ok ${detail}`.trim());
  } catch (error) {
    console.log(`error ${String(error.message || error).split("\n")[0]}`);
  }
}
lines.close();
await browser.close();
process.exit(0);
