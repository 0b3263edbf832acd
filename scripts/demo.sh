#!/usr/bin/env bash
# The main job: runs the radiosonde example end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m radiosonde.demo "$@"
