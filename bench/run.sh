#!/usr/bin/env bash
# Engine benchmark: whole-process wall time and peak RSS of `stoke run --stage all`
# in a sandbox root (demo/root: NoCloud seed, two image layers, user-data; no
# external commands), for
#   first boot      - a fresh copy of the root every run
#   rerun           - same boot, nothing due (what a unit restart costs)
#   reboot          - same instance, new boot id: per-boot modules run again
# Usage: bench/run.sh [RUNS]   (needs hyperfine; builds the release binary)
#        STOKE_BIN=PATH bench/run.sh [RUNS]   (benches that binary instead, e.g. an older
#        commit's release build, on this tree's demo root)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
if [ -n "${STOKE_BIN:-}" ]; then
    stoke=$(realpath "$STOKE_BIN")
else
    cargo build --release --quiet --bin stoke
    stoke=$PWD/target/release/stoke
fi
work=$(mktemp -d /tmp/stoke-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
base=$work/base; root=$work/root
cp -a demo/root "$base"
# The demo's user-data carries a cloud-init key (a warning); bench the clean path.
sed -i '/^runcmd:/,$d' "$base/var/lib/stoke/seed/nocloud/user-data"
run="$stoke --root $root run --stage all"

echo "## stoke $("$stoke" --version) ($stoke; tree $(git rev-parse --short HEAD)), $(nproc) cores, $(uname -r)"
hyperfine -N --warmup 5 --runs "$runs" --export-markdown "$work/first.md" \
  --prepare "sh -c 'rm -rf $root && cp -a $base $root'" -n "first boot" "$run" >/dev/null
rm -rf "$root"; cp -a "$base" "$root"; $run >/dev/null 2>&1 || true
hyperfine -N --warmup 5 --runs "$runs" --export-markdown "$work/rerun.md" \
  -n "rerun, nothing due" "$run" >/dev/null
hyperfine -N --warmup 5 --runs "$runs" --export-markdown "$work/reboot.md" \
  --prepare "sh -c 'head -c16 /dev/urandom | od -An -tx1 | tr -d \" \\n\" > $root/proc/sys/kernel/random/boot_id'" \
  -n "reboot, same instance" "$run" >/dev/null
cat "$work/first.md"; tail -n +3 "$work/rerun.md"; tail -n +3 "$work/reboot.md"

rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n1; }
rm -rf "$root"; cp -a "$base" "$root"
first_rss=$(rss $run)
rerun_rss=$(rss $run)
echo
echo "| peak RSS | first boot | rerun, nothing due |"
echo "|---|---|---|"
echo "| KiB | $first_rss | $rerun_rss |"
echo
echo "binary: $(stat -c %s "$stoke") bytes (release, stripped)"
