#!/usr/bin/env bash
# The whole test suite: lint, types, unit and integration tests against real servers.
# Sets everything up itself on a fresh machine (see scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --servers
export PATH="$PWD/.venv/bin:$PATH"
echo "==> ruff" >&2
ruff check src tests bench examples
ruff format --check src tests bench examples
echo "==> mypy --strict src" >&2
mypy
echo "==> pytest" >&2
exec pytest "$@"
