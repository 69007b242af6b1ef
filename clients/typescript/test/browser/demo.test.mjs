// The browser demo in a real browser: Debian's headless Chromium (driven over the DevTools protocol by
// puppeteer-core) opens the page `switchyard dev --demo-http` serves, twice; two players log in and join
// a room, and a chat line typed in one page appears in the other (push 6 over the WebSocket port).
// CHROMIUM overrides the browser binary (default /usr/bin/chromium). UPDATE_SCREENSHOT=1 writes the
// screenshot the README shows to docs/browser-demo.png; otherwise it goes to a temporary directory.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import puppeteer from "puppeteer-core";

import { startDev } from "../support/dev.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const docs = fileURLToPath(new URL("../../../../docs/", import.meta.url));

// Poll on a timer: a page in a background tab gets no animation frames, the default polling.
const POLL = { polling: 100, timeout: 10_000 };

let dev;
let browser;
let profile;

before(async () => {
  dev = await startDev();
  profile = mkdtempSync(join(tmpdir(), "switchyard-chromium-"));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    protocolTimeout: 20_000,
    args: [
      "--no-sandbox", // root in CI
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      // Without these, Chromium's own background connections get in the way on a machine without internet.
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${profile}`,
    ],
  });
});

after(async () => {
  await browser?.close();
  await dev?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** Opens the demo, logs `name` (uid) in and joins `room`. */
async function player(uid, name, room) {
  const page = await browser.newPage();
  await page.setViewport({ width: 720, height: 640 });
  const problems = [];
  page.on("pageerror", (err) => problems.push(err.message));
  await page.goto(dev.demo, { waitUntil: "load" });
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("connected to ws://"), POLL);
  await page.type("#login input[name=uid]", String(uid));
  await page.type("#login input[name=name]", name);
  await page.click("#login button");
  await page.waitForFunction(
    (uid) => document.getElementById("status").textContent.includes(`(uid ${uid}) on node`),
    POLL,
    uid,
  );
  await page.$eval("#join input[name=room]", (input, room) => (input.value = room), room);
  await page.click("#join button");
  await page.waitForFunction((room) => document.getElementById("log").textContent.includes(`joined ${room}`), POLL, room);
  return { page, problems };
}

const lines = (page) => page.$$eval("#log li", (items) => items.map((li) => li.textContent));

test("two players in two pages chat through switchyard dev", async () => {
  const ada = await player(1, "ada", "lobby");
  const bob = await player(2, "bob", "lobby");
  assert.deepEqual((await lines(bob.page)).at(-1), "joined lobby (2 members)");

  // Chromium throttles background tabs: bring the page that types to the front, as a player would.
  await ada.page.bringToFront();
  await ada.page.type("#say input[name=text]", "hello from ada's browser");
  await ada.page.click("#say button");
  await bob.page.waitForFunction(() => document.getElementById("log").textContent.includes("hello from ada's browser"), POLL);
  assert.ok((await lines(bob.page)).includes("#1: hello from ada's browser"));
  assert.ok((await lines(ada.page)).includes("me: hello from ada's browser"), "the sender's page shows its own line too");

  await bob.page.bringToFront();
  await bob.page.type("#say input[name=text]", "hi ada, bob here");
  await bob.page.keyboard.press("Enter");
  await ada.page.waitForFunction(() => document.getElementById("log").textContent.includes("#2: hi ada, bob here"), POLL);
  assert.deepEqual(ada.problems, []);
  assert.deepEqual(bob.problems, []);

  const path = process.env.UPDATE_SCREENSHOT ? join(docs, "browser-demo.png") : join(profile, "browser-demo.png");
  await ada.page.bringToFront();
  await ada.page.screenshot({ path });
  assert.ok(statSync(path).size > 10_000, "a real screenshot");
});
