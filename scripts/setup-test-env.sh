#!/usr/bin/env bash
# Installs what the tests need beyond npm, when it is missing, and says what it installs.
# etcd-server: the cp tests run a real 3-member etcd; chromium: the dashboard tests drive it headless;
# openssl: the cp TLS test makes its CA and certificates with it.
set -euo pipefail
need=()
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "setup: nothing to install"
  exit 0
fi
echo "setup: installing ${need[*]} from Debian"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
