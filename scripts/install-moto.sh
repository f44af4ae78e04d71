#!/bin/sh
# Installs moto_server (the Route53 peer of the route53 module's tests) into a
# Python virtual environment. Idempotent: an existing working install is kept.
#
#   scripts/install-moto.sh [VENV_DIR]     (default: target/moto-venv)
#
# The tests look for VENV_DIR/bin/moto_server under target/moto-venv, or take
# the path to moto_server from STOKE_MOTO_SERVER.
set -eu

venv=${1:-target/moto-venv}
# Written against moto 5.2; override with MOTO_SPEC (a pip requirement).
spec=${MOTO_SPEC:-moto[server]>=5.2,<6}

if [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" -c 'import moto.server' 2>/dev/null; then
  echo "moto_server already installed: $venv/bin/moto_server"
  exit 0
fi

python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$spec"
"$venv/bin/python" -c 'import moto.server'
echo "moto_server installed: $venv/bin/moto_server"
