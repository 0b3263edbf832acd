#!/usr/bin/env bash
# Sets up everything the demo, the tests and the benchmarks need, on a fresh machine or an old one:
# the virtualenv with the package and its extras, the Debian packages for the real servers the
# integration tests start (Prometheus + promtool, rsyslog), and the StatsD daemon from npm.
# Idempotent: each step is skipped when what it makes is already there and up to date.
#   scripts/bootstrap.sh            python env only
#   scripts/bootstrap.sh --servers  python env + the real servers for the integration tests
#   scripts/bootstrap.sh --bench    python env + the peers the benchmarks compare against
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
want_servers=0 want_bench=0
for arg in "$@"; do
  case "$arg" in
    --servers) want_servers=1 ;;
    --bench) want_bench=1 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($python --version)"
  $python -m venv .venv
fi
extras="dev"
[ "$want_bench" = 1 ] && extras="$extras,bench"
stamp=".venv/.radiosonde-$(cat pyproject.toml | sha1sum | cut -c1-12)-${extras//,/-}"
if [ ! -f "$stamp" ]; then
  say "installing radiosonde[$extras] into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
  touch "$stamp"
fi

if [ "$want_servers" = 1 ]; then
  apt_pkgs=()
  command -v prometheus >/dev/null || apt_pkgs+=(prometheus)
  command -v promtool >/dev/null || apt_pkgs+=(prometheus)
  command -v rsyslogd >/dev/null || [ -x /usr/sbin/rsyslogd ] || apt_pkgs+=(rsyslog)
  command -v node >/dev/null || apt_pkgs+=(nodejs npm)
  if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    say "installing Debian packages: ${apt_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep package scripts from starting the daemons system-wide: the tests start their own.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
  if [ ! -f .cache/node/node_modules/statsd/stats.js ]; then
    say "installing the StatsD daemon from npm"
    mkdir -p .cache/node
    npm install --silent --no-audit --no-fund --prefix .cache/node statsd@0.9.0 >/dev/null 2>&1 \
      || npm install --no-audit --no-fund --prefix .cache/node statsd@0.9.0
  fi
fi
