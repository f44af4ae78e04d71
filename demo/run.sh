#!/usr/bin/env bash
# Runs stoke against a sandbox copy of demo/root (a NoCloud seed, two image
# layers, user-data): shows the plan, runs every stage, prints the status, the
# files it wrote and the commands/syscalls it recorded instead of running.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cargo build --quiet --manifest-path "$here/../Cargo.toml" --bin stoke
stoke="$here/../target/debug/stoke"
root=$(mktemp -d /tmp/stoke-demo.XXXXXX)
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
