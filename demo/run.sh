#!/usr/bin/env bash
# Runs stoke against a sandbox copy of demo/root (a NoCloud seed, two image
# layers, user-data): shows the plan, runs every stage, prints the status, the
# files it wrote and the commands/syscalls it recorded instead of running.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${STOKE_BIN:-}" ]; then
    stoke=$STOKE_BIN # a stoke already built (tests/demo.rs)
else
    echo "== building stoke (cargo build: a first build takes a few minutes; its progress follows)"
    # cargo prints its progress on stderr; the binary's path (wherever the target dir is) comes
    # from its JSON messages on stdout.
    stoke=$(cargo build --manifest-path "$here/../Cargo.toml" --bin stoke \
        --message-format=json-render-diagnostics |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
fi
if [ ! -x "$stoke" ]; then
    echo "demo: no stoke binary (cargo build failed?)" >&2
    exit 1
fi
root=$(mktemp -d "${TMPDIR:-/tmp}/stoke-demo.XXXXXX")
cp -a "$here/root/." "$root/"
echo "== sandbox root: $root"
echo "== stoke plan"
"$stoke" --root "$root" plan
echo "== stoke run --stage all"
"$stoke" --root "$root" run --stage all || true
echo "== stoke status"
"$stoke" --root "$root" status || true
echo "== files stoke wrote"
(cd "$root" && find etc home var/lib/stoke -newer "$root/proc/sys/kernel/random/boot_id" -type f | sort)
[ -f "$root/etc/hostname" ] && echo "   /etc/hostname: $(cat "$root/etc/hostname")"
echo "== recorded actions (run/stoke/actions.jsonl): not executed under --root"
cat "$root/run/stoke/actions.jsonl" 2>/dev/null || echo "(none)"
echo "== a second run in the same boot does nothing:"
"$stoke" --root "$root" run --stage all 2>&1 | grep 'stage final' || true
echo "== and the boot's record stays (stoke status, stages):"
"$stoke" --root "$root" status | grep '^stage' || true
