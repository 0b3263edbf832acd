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
  statsd_version=0.9.0
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo)
  apt_pkgs=()
  # Debian's `prometheus` package ships both `prometheus` and `promtool`.
  { command -v prometheus && command -v promtool; } >/dev/null || apt_pkgs+=(prometheus)
  command -v rsyslogd >/dev/null || [ -x /usr/sbin/rsyslogd ] || apt_pkgs+=(rsyslog)
  command -v node >/dev/null || apt_pkgs+=(nodejs)
  command -v npm >/dev/null || apt_pkgs+=(npm)
  if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    if [ "${#as_root[@]}" -gt 0 ] && ! command -v sudo >/dev/null; then
      echo "bootstrap: run as root (or install sudo) to install: ${apt_pkgs[*]}" >&2
      exit 1
    fi
    say "installing Debian packages: ${apt_pkgs[*]}"
    # Keep package scripts from starting the daemons system-wide: the tests start their own.
    # A policy-rc.d that was already there (container images ship one) is left alone; ours is
    # removed even when apt fails, so the machine is not left refusing to start services.
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      own_policy=1
      trap '"${as_root[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
      printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee /usr/sbin/policy-rc.d >/dev/null
      "${as_root[@]}" chmod +x /usr/sbin/policy-rc.d
    fi
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
    if [ "$own_policy" = 1 ]; then
      "${as_root[@]}" rm -f /usr/sbin/policy-rc.d
      trap - EXIT
    fi
  fi
  if ! grep -qs "\"version\": \"$statsd_version\"" .cache/node/node_modules/statsd/package.json; then
    say "installing the StatsD daemon (npm statsd@$statsd_version) into .cache/node"
    mkdir -p .cache/node
    # --omit=optional skips modern-syslog, a native add-on (compiled with node-gyp) that only the
    # daemon's syslog logger uses; the tests log to stdout.
    npm_args=(install --no-audit --no-fund --save-exact --omit=optional --prefix .cache/node "statsd@$statsd_version")
    npm --silent "${npm_args[@]}" >/dev/null 2>&1 || npm "${npm_args[@]}"
  fi
fi
