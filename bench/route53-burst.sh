#!/bin/sh
# Route53 fleet burst: N instances register at once, each in its own process,
# through a proxy that lets RATE requests/s reach moto_server and answers
# Throttling (HTTP 400, AWS XML) to the rest. Goal: all N succeed within 1.2x
# the N/RATE floor. Results go in docs/performance.md ("Route53 fleet burst").
#
#   bench/route53-burst.sh [RUNS]        env: N=200 RATE=5 BUCKET=5 BUDGET=120
#                                             PROFILE=dev|release MAX_BACKOFF=
#
# Each registration is a separate process of the `burst` example running the
# route53 module's `run` once (the stoke binary is not wired for route53 yet).
set -eu
cd "$(dirname "$0")/.."

runs=${1:-1}
N=${N:-200}
RATE=${RATE:-5}
BUCKET=${BUCKET:-5}
BUDGET=${BUDGET:-120}
PROFILE=${PROFILE:-dev}

if [ -z "${STOKE_MOTO_SERVER:-}" ]; then
  scripts/install-moto.sh target/moto-venv >/dev/null
fi
cargo build -q -p stoke-route53 --example burst --profile "$PROFILE"
case $PROFILE in dev) dir=debug ;; *) dir=$PROFILE ;; esac
bin=${CARGO_TARGET_DIR:-target}/$dir/examples/burst

# 200 processes, each with a few sockets: make sure the limits allow it.
ulimit -n 65536 2>/dev/null || true

i=1
status=0
while [ "$i" -le "$runs" ]; do
  echo "== run $i/$runs: N=$N RATE=$RATE BUCKET=$BUCKET BUDGET=$BUDGET PROFILE=$PROFILE"
  "$bin" --n "$N" --rate "$RATE" --bucket "$BUCKET" --budget "$BUDGET" \
    ${MAX_BACKOFF:+--max-backoff "$MAX_BACKOFF"} || status=1
  i=$((i + 1))
done
exit $status
