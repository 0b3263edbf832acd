#!/usr/bin/env bash
# Benchmarks: radiosonde next to prometheus_client, the OpenTelemetry SDK and blinker, in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --bench
exec .venv/bin/python -m bench "$@"
