#!/usr/bin/env bash
# Installs what `cargo test --workspace` needs on a fresh Debian 12 machine:
# real storage tools, ssh-keygen, strace (the crash test), g++ (libFuzzer, scripts/fuzz), Puppet, moto_server (the Route53 peer) and
# prometheus_client (the metrics test's parser).
# Idempotent; run as root (CI is root).
set -euo pipefail
cd "$(dirname "$0")/.."

# apt-utils: apt-ftparchive makes the local apt repository of the VM `system` scenario.
# dosfstools, genisoimage: NoCloud seed volumes as the VM suite makes them (src/datasource/volume_label.rs).
pkgs=(mdadm xfsprogs e2fsprogs util-linux openssh-client puppet-agent hyperfine python3-venv passwd sudo cloud-guest-utils fdisk apt-utils strace g++ dosfstools genisoimage)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's puppet-agent package enables an agent service; tests only run `puppet apply`.
systemctl mask puppet.service >/dev/null 2>&1 || true

bash scripts/install-moto.sh target/moto-venv

# Prometheus's own parser, for the metrics textfile test (tests/observability.rs).
venv=target/prom-venv
if ! "$venv/bin/python" -c 'import prometheus_client.parser' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'prometheus_client>=0.20,<1'
fi
