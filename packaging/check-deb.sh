#!/usr/bin/env bash
# Builds the .deb (`cargo deb`: a release build) and checks it with lintian: no error or
# warning, except the deliberate ones in packaging/debian/lintian-overrides (each says why).
# Needs cargo-deb (vm-tests/install-deps.sh installs it) and lintian (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v lintian >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian
fi
if ! cargo deb --version >/dev/null 2>&1; then
    echo "check-deb: cargo-deb is missing (cargo install cargo-deb --locked)" >&2
    exit 1
fi
# The man page and completions in packaging/ must match the CLI (tests/cli_docs.rs says how).
cargo test --quiet --test cli_docs
out=$(mktemp -d /tmp/stoke-deb.XXXXXX)
trap 'rm -rf "$out"' EXIT
cargo deb --output "$out"
deb=$(ls "$out"/stoke_*.deb)
# Size budget: stoke is read from disk at every boot, and its size grew with every module.
# Growing past the budget must be a decision (raise it here, say why in docs/performance.md).
budget_mib=24
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
size=$(stat -c %s "$target/release/stoke")
echo "check-deb: release binary (stripped) $((size / 1024)) KiB, budget ${budget_mib} MiB"
if [ "$size" -gt $((budget_mib * 1024 * 1024)) ]; then
    echo "check-deb: the stripped binary is over its ${budget_mib} MiB budget" >&2
    exit 1
fi
dpkg-deb --contents "$deb" | grep -E 'man1/stoke.1.gz|completions/stoke|_stoke'
lintian --fail-on error,warning --display-info "$deb"
echo "check-deb: $(basename "$deb") is lintian clean (overrides: packaging/debian/lintian-overrides)"
