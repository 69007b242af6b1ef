// Test support shared by the integration and browser tests: starts a real `switchyard dev` (the Rust
// binary built by cargo) on ephemeral loopback ports and reads its addresses from its banner.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url));

/** The binary under test: $SWITCHYARD_BIN, or target/debug/switchyard of this checkout. */
export function switchyardBinary() {
  const bin = process.env.SWITCHYARD_BIN ?? `${repoRoot}target/debug/switchyard`;
  if (!existsSync(bin)) {
    throw new Error(`${bin} does not exist: run \`cargo build --bin switchyard\` or set SWITCHYARD_BIN`);
  }
  return bin;
}

/**
 * Starts `switchyard dev` with `extra` flags. Resolves with its addresses once the banner is printed:
 * `{ tcp: {host, port}, ws, admin, demo, process, stop(), terminate() }`.
 */
export function startDev(extra = []) {
  const child = spawn(
    switchyardBinary(),
    ["dev", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--http", "127.0.0.1:0", ...extra],
    { env: { ...process.env, SWITCHYARD_LOG: process.env.SWITCHYARD_LOG ?? "warn" }, stdio: ["ignore", "pipe", "inherit"] },
  );
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    const dev = { process: child, exited };
    const timer = setTimeout(() => reject(new Error("switchyard dev printed no banner within 20 s")), 20_000);
    child.once("exit", (code) => reject(new Error(`switchyard dev exited early with ${code}`)));
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const words = line.trim().split(/\s+/);
      if (words[0] === "clients" && words[1].startsWith("tcp://")) {
        const [host, port] = words[1].slice(6).split(":");
        dev.tcp = { host, port: Number(port) };
      } else if (words[0] === "clients" && words[1].startsWith("ws://")) {
        dev.ws = words[1];
      } else if (words[0] === "browser") {
        dev.demo = words[1];
      } else if (words[0] === "admin") {
        dev.admin = words[1];
      } else if (words[0] === "demo" && dev.admin) {
        clearTimeout(timer);
        dev.stop = async () => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
          await exited;
        };
        dev.terminate = () => child.kill("SIGTERM");
        resolve(dev);
      }
    });
  });
}

/** The sum of the samples of `name` whose labels contain every string of `labels`. */
export async function metric(dev, name, labels = []) {
  const text = await (await fetch(`${dev.admin}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (!(rest.startsWith("{") || rest.startsWith(" "))) continue;
    if (labels.every((l) => line.includes(l))) sum += Number(line.split(" ").at(-1));
  }
  return sum;
}
