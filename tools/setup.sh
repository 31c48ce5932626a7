#!/bin/sh
# setup.sh - installs the Debian packages ringws needs to build and test,
# skipping those already present, so that `make run` and `make test` work on a
# fresh Debian 12 machine.  Needs root (or sudo) only when something is missing.
set -eu

PKGS="gcc g++ make pkg-config meson ninja-build liburing-dev libssl-dev libjemalloc-dev
python3 python3-websockets clang libclang-rt-14-dev libbenchmark-dev chromium iproute2
openssl python3-cryptography node-ws libnss3-tools nginx haproxy
python3-prometheus-client libjansson-dev python3-jwt
redis-server redis-tools libhiredis-dev zlib1g-dev libdeflate-dev"

# Packages whose postinst starts a system service: the tests run private
# instances of them (tests/integration/fronts.py and the cluster suite), and
# a service started by the install would take ports 80, 443 and 6379 for
# nothing.
SERVICE_PKGS="nginx haproxy redis-server"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "setup: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

# invoke-rc.d, which a postinst calls to start its service, asks
# /usr/sbin/policy-rc.d first; exit status 101 forbids the start (the
# postinst then goes on without it).  One is put in place for the install
# only, and only where none exists: an existing policy is the
# administrator's and is left as it is (a container's usually forbids every
# start already).
POLICY=/usr/sbin/policy-rc.d
policy_added=""
policy_remove() {
    [ -n "$policy_added" ] && $SUDO rm -f "$POLICY"
    policy_added=""
}
for p in $SERVICE_PKGS; do
    case " $missing " in
    *" $p "*)
        if [ -z "$policy_added" ] && [ ! -e "$POLICY" ]; then
            trap policy_remove EXIT
            trap 'policy_remove; exit 130' INT TERM
            printf '#!/bin/sh\n# tools/setup.sh: no service starts during its install\nexit 101\n' |
                $SUDO tee "$POLICY" >/dev/null
            $SUDO chmod 755 "$POLICY"
            policy_added=1
        fi ;;
    esac
done

$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
policy_remove
