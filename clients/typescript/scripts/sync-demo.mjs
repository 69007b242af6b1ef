// Copies the browser-safe build of the SDK (dist/*.js without the Node-only modules) into demo/sdk/,
// the copy `switchyard dev` embeds in its binary. test/unit/demo-fresh.test.mjs fails when it is stale.
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";

import { BROWSER_MODULES } from "./browser-modules.mjs";

const dist = new URL("../dist/", import.meta.url);
const sdk = new URL("../demo/sdk/", import.meta.url);
rmSync(sdk, { recursive: true, force: true });
mkdirSync(sdk, { recursive: true });
for (const name of BROWSER_MODULES) copyFileSync(new URL(name, dist), new URL(name, sdk));
console.log(`demo/sdk: ${readdirSync(sdk).join(", ")}`);
