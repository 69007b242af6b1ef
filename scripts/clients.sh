#!/usr/bin/env bash
# Installs what the client tests need, idempotently (each part is skipped when present):
#   - Node.js >= 20 and npm (Debian's nodejs when there is none; the machine image normally has Node 20);
#   - the TypeScript SDK's npm packages (npm ci in clients/typescript, from its package-lock.json);
#   - Debian's chromium for the browser test (browsers cannot be downloaded here; puppeteer-core drives it);
#   - python3 for the README's Python example test;
#   - due's Go programs (bench/due/build.sh), among them the client that tests/due_client.rs drives.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_missing=()
command -v node >/dev/null 2>&1 || apt_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_missing+=(npm)
[ -x /usr/bin/chromium ] || apt_missing+=(chromium)
command -v python3 >/dev/null 2>&1 || apt_missing+=(python3)
if ((${#apt_missing[@]})); then
  echo "clients.sh: apt-get install ${apt_missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "clients.sh: Node.js $(node --version) is too old: the SDK's tests need Node 20 or later" >&2
  exit 1
fi

# npm ci when node_modules is missing or older than the lock file.
sdk=clients/typescript
if [ ! -f "$sdk/node_modules/.package-lock.json" ] || [ "$sdk/package-lock.json" -nt "$sdk/node_modules/.package-lock.json" ]; then
  (cd "$sdk" && npm ci --no-audit --no-fund --loglevel=error)
fi

due_bin=$(./bench/due/build.sh)
echo "clients.sh: node $(node --version), $(/usr/bin/chromium --version 2>/dev/null | head -1), due client in $due_bin"
