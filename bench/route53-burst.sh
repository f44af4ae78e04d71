#!/bin/sh
# Route53 fleet burst: N instances boot at once, each a real
# `stoke --root <its sandbox> run --stage $STAGE` process, and register through
# a proxy that lets RATE requests/s reach moto_server and answers Throttling
# (HTTP 400, AWS XML) to the rest. Goal: all N succeed within 1.2x the N/RATE
# floor. Results go in docs/performance.md ("Route53 fleet burst").
#
#   bench/route53-burst.sh [RUNS]        env: N=200 RATE=5 BUCKET=5 BUDGET=120
#                                             PROFILE=dev|release MAX_BACKOFF=
#                                             STAGE=all
#
# The `burst` example (modules/route53/examples/burst.rs) does the work: starts
# moto_server and the proxy, creates the zone, writes the N sandbox roots
# (NoCloud seed: instance-id, local-ipv4, hostname, route53 section; other
# modules off), spawns the N stoke processes, reads each root's
# run/stoke/status.json and checks the zone holds N A records. This script
# builds both, runs it in its own process group (so an interrupt stops moto,
# the proxy and every stoke), and removes the roots.
set -eu
cd "$(dirname "$0")/.."

runs=${1:-1}
N=${N:-200}
RATE=${RATE:-5}
BUCKET=${BUCKET:-5}
BUDGET=${BUDGET:-120}
PROFILE=${PROFILE:-dev}
STAGE=${STAGE:-all}

if [ -z "${STOKE_MOTO_SERVER:-}" ]; then
  scripts/install-moto.sh target/moto-venv >/dev/null
fi
cargo build -q --bin stoke --profile "$PROFILE"
cargo build -q -p stoke-route53 --example burst --profile "$PROFILE"
case $PROFILE in dev) dir=debug ;; *) dir=$PROFILE ;; esac
out=${CARGO_TARGET_DIR:-target}/$dir
stoke=$(cd "$out" && pwd)/stoke

# N processes, each with a few sockets and files: make sure the limits allow it.
ulimit -n 65536 2>/dev/null || true

work=$(mktemp -d "${TMPDIR:-/tmp}/stoke-burst.XXXXXX")
pid=
cleanup() {
  if [ -n "$pid" ]; then
    kill -TERM "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

i=1
status=0
while [ "$i" -le "$runs" ]; do
  echo "== run $i/$runs: N=$N RATE=$RATE BUCKET=$BUCKET BUDGET=$BUDGET PROFILE=$PROFILE STAGE=$STAGE"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  mkdir "$work/run$i"
  # setsid: a process group of its own (moto, the N stoke) for the trap to stop.
  TMPDIR=$work setsid "$out/examples/burst" --n "$N" --rate "$RATE" --bucket "$BUCKET" \
    --budget "$BUDGET" ${MAX_BACKOFF:+--max-backoff "$MAX_BACKOFF"} \
    --stoke "$stoke" --stage "$STAGE" --work "$work/run$i" &
  pid=$!
  wait "$pid" || status=1
  pid=
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  rm -rf "$work/run$i"
  i=$((i + 1))
done
exit $status
