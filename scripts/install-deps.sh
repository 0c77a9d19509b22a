#!/usr/bin/env bash
# install-deps.sh: install the Debian packages pickline needs to build, test and
# bench (prometheus for promtool, chromium and tmux: the tests look at the status
# page in a real browser and at qctl top in a real terminal). Idempotent: only missing packages are installed; safe to run repeatedly.
set -euo pipefail

pkgs=(
  build-essential scons pkg-config
  liblmdb-dev lmdb-utils libmsgpack-dev libev-dev libcurl4-openssl-dev libpq-dev libyaml-dev libyajl-dev libmicrohttpd-dev nettle-dev
  libsystemd-dev scdoc groff-base man-db bash-completion systemd
  postgresql postgresql-client
  beanstalkd wrk
  python3 openssl ca-certificates
  prometheus chromium tmux
)
# npm: tests/test_vega.py fetches the public vega-datasets package (real data
# with field names that are not identifiers) in its setup. A machine whose
# Node.js came with its own npm (a nodejs package that conflicts with Debian's
# npm) keeps it: Debian's npm is installed only where no npm runs.

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ! command -v npm >/dev/null 2>&1; then
  missing+=(npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts services on install; beanstalkd's system instance is not ours.
if command -v systemctl >/dev/null 2>&1; then systemctl stop beanstalkd >/dev/null 2>&1 || true; fi
service beanstalkd stop >/dev/null 2>&1 || true
# prometheus is here for its promtool (tests/test_observe.py), not as a service.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
service prometheus stop >/dev/null 2>&1 || true
echo "install-deps: done"
