#!/usr/bin/env bash
# Install the Debian packages needed to build, test and run nstance-secrets (Debian 12).
#
# Idempotent: checks each package with dpkg-query and only calls apt-get when something is missing,
# silently when everything is there. Needs root to install; otherwise prints the command to run and
# exits 1.
set -euo pipefail

packages=(
    build-essential autoconf automake libtool pkg-config
    libssl-dev libp11-kit-dev p11-kit libyaml-dev libjansson-dev libcmocka-dev libsqlite3-dev
    softhsm2 opensc libnss3 libnss3-tools
    clang clang-format libclang-rt-14-dev
    python3 python3-cryptography python3-jwt openssl
    libcurl4-openssl-dev python3-botocore
    swtpm swtpm-tools tpm2-abrmd libtss2-tcti-tabrmd0 libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-tools dbus
    libevent-dev curl
    golang-go gnutls-bin debhelper lintian systemd bash-completion
    ceph-mon ceph-osd radosgw ceph-common uuid-runtime
)
# node and npm run s3rver in the tests. A machine may already have them from another package set (a
# nodesource nodejs bundles npm and conflicts with Debian's npm package), so they count as present when
# the commands are there.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

echo "deps.sh: missing packages: ${missing[*]}" >&2
install_cmd="DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: not root; as root, run:" >&2
    echo "  apt-get update && $install_cmd" >&2
    exit 1
fi

# Run a command with its output captured; on failure show that output with repository addresses and
# host names masked, so logs never carry where packages come from.
run_quiet() {
    local log rc=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "deps.sh: '$*' failed (exit $rc):" >&2
        sed -E -e 's#[A-Za-z][A-Za-z0-9+.-]*://[^ ]*#<repository>#g' \
            -e 's#[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\.[A-Za-z]{2,}#<host>#g' "$log" | tail -n 30 >&2
    fi
    rm -f "$log"
    return "$rc"
}

run_quiet apt-get update
run_quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
echo "deps.sh: installed: ${missing[*]}" >&2
