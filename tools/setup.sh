#!/bin/sh
# setup.sh - installs the Debian packages ringws needs to build and test,
# skipping those already present, so that `make run` and `make test` work on a
# fresh Debian 12 machine.  Needs root (or sudo) only when something is missing.
set -eu

PKGS="gcc g++ make pkg-config meson ninja-build liburing-dev libssl-dev libjemalloc-dev
python3 python3-websockets clang libclang-rt-14-dev libbenchmark-dev chromium iproute2
openssl python3-cryptography node-ws libnss3-tools libjansson-dev python3-jwt"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "setup: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
