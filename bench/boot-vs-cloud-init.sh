#!/usr/bin/env bash
# Boot-time race of stoke against Debian's cloud-init under QEMU: same image, same NoCloud seed,
# same work (hostname, ssh host keys ed25519+ecdsa+rsa, authorized key, one ephemeral disk made xfs
# and mounted), variants alternated: A cloud-init, B stoke, C no agent (floor), L a shell script
# doing the work concurrently (the physical limit). Prints a markdown table (the one in
# docs/performance.md, "Boot time against cloud-init").
#
#   sudo bench/boot-vs-cloud-init.sh [--rounds 3] [--jobs 1] [--variants CBL] [--no-rsa] [--out FILE.md]
# (--no-rsa: host keys ed25519+ecdsa only, the headline race of docs/performance.md)
#
# Tests STOKE_BIN, else target/release/stoke (built here if missing; a debug binary is not what
# ships). Needs the VM test host tools (vm-tests/install-deps.sh) and root.
set -euo pipefail
cd "$(dirname "$0")/.."
vm-tests/install-deps.sh
if [ -z "${STOKE_BIN:-}" ]; then
    if [ ! -x target/release/stoke ] || [ -n "$(find src modules -newer target/release/stoke -name '*.rs' -print -quit)" ]; then
        cargo build --release --bin stoke
    fi
    export STOKE_BIN=$PWD/target/release/stoke
fi
exec python3 bench/boot-bench.py "$@"
