// The demo page's copy of the SDK (demo/sdk/, embedded in the `switchyard` binary) must be exactly the
// current build: after changing src/, run `npm run build && npm run demo:sync` and commit demo/sdk/.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";

import { BROWSER_MODULES } from "../../scripts/browser-modules.mjs";

test("demo/sdk holds exactly the current browser build of the SDK", () => {
  const sdk = new URL("../../demo/sdk/", import.meta.url);
  const dist = new URL("../../dist/", import.meta.url);
  assert.deepEqual(readdirSync(sdk).sort(), [...BROWSER_MODULES].sort());
  for (const name of BROWSER_MODULES) {
    assert.equal(
      readFileSync(new URL(name, sdk), "utf8"),
      readFileSync(new URL(name, dist), "utf8"),
      `demo/sdk/${name} is stale: run \`npm run build && npm run demo:sync\``,
    );
  }
});

test("the binary embeds every file of the demo (src/demo_page.rs names each one)", () => {
  const rust = readFileSync(new URL("../../../../src/demo_page.rs", import.meta.url), "utf8");
  for (const name of ["index.html", "app.js", ...BROWSER_MODULES.map((m) => `sdk/${m}`)]) {
    assert.ok(rust.includes(`clients/typescript/demo/${name}")`), `src/demo_page.rs does not embed demo/${name}`);
  }
});
