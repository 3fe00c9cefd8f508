#!/usr/bin/env bash
# Build the Debian packages from a release tarball, check them with lintian, install them on this machine,
# run the demo flow against the installed programs, and purge them (contrib/test.sh runs it after
# distcheck; doc/install.md).
#
#   bash contrib/pkg-deb.sh TARBALL
#
# Steps, each a failure when it goes wrong:
#   1. unpack TARBALL in a temp dir; DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -us -uc -b (the tests ran
#      already; the packages hold only what `make install` installs).
#   2. lintian on the .changes: any E: line fails (W: lines are listed; doc/choices.md justifies them).
#   3. apt-get install ./*.deb; the system user nstance, /etc/nstance root:nstance 0750, /var/lib/nstance and
#      /var/cache/nstance-secrets nstance:nstance 0700, the units, man pages, completions and examples in
#      place; `systemd-analyze security --offline=true` of both units printed (exposure).
#   4. contrib/demo.sh with the installed CLI and agent and the server started by the unit's ExecStart line
#      (no systemd in CI) with the demo's `-c dev/config.yaml` appended (the last -c wins): secret put/get,
#      CA, nonces, server, agent enroll and sync. As root, not as the unit's User=nstance: the demo's
#      token and store are made by root in a 0700 temp dir.
#   5. apt-get purge: programs, units and /var/cache/nstance-secrets gone. Runs on failure too (a trap), so
#      the machine is left as it was for the tests that follow (they use the build tree's programs).
#   4b. The unit's ExecStartPre (config check) and ExecStart lines run as it runs them, as User=nstance with
#      /etc/nstance/secrets.yaml (a file KEK and a software CA made by the CLI as nstance in
#      /var/lib/nstance): ready, /health answers, SIGHUP (ExecReload) keeps it serving, SIGTERM stops it.
# Needs root, dpkg-buildpackage, lintian and apt-get: exit 99 when missing (a hard error, never a skip).
# Prints "pkg-deb: ok" last and exits 0, or exits 1.
set -euo pipefail
tarball=$(readlink -f "${1:?usage: pkg-deb.sh TARBALL}")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for t in dpkg-buildpackage lintian apt-get dpkg-query; do
    command -v "$t" >/dev/null || {
        echo "pkg-deb: $t not installed (apt-get install debhelper lintian devscripts)" >&2
        exit 99
    }
done
[ "$(id -u)" = 0 ] || {
    echo "pkg-deb: needs root (apt-get install)" >&2
    exit 99
}
# An operator's installation is never replaced (nor purged afterwards) by this test.
for p in nstance-secrets nstance-secrets-agent; do
    if dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed; then
        echo "pkg-deb: $p is already installed here; refusing to replace it" >&2
        exit 1
    fi
done

W=$(mktemp -d /tmp/ns-pkg-deb.XXXXXXXX)
installed=0
cleanup() {
    local rc=$?
    if [ -n "${unit_pid:-}" ]; then
        kill "$unit_pid" 2>/dev/null || true
        wait "$unit_pid" 2>/dev/null || true
    fi
    if [ "$installed" = 1 ]; then
        rm -f /etc/nstance/agent.env /etc/nstance/secrets.yaml /etc/nstance/kek.key
        rm -rf /var/lib/nstance/bucket
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 purge -y -q nstance-secrets nstance-secrets-agent \
            >"$W/purge.log" 2>&1 || {
            echo "pkg-deb: purge failed:" >&2
            tail -n 20 "$W/purge.log" >&2
        }
    fi
    if [ "${NS_KEEP_TMP:-}" = 1 ] || [ "$rc" != 0 ]; then
        echo "pkg-deb: logs kept in $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
fail() {
    echo "pkg-deb: FAIL: $*" >&2
    exit 1
}

echo "==> pkg-deb: dpkg-buildpackage -us -uc -b (nocheck) from $(basename "$tarball")"
tar -xzf "$tarball" -C "$W"
src=$(find "$W" -mindepth 1 -maxdepth 1 -type d -name 'nstance-secrets-*' | head -n 1)
[ -d "$src/debian" ] || fail "no debian/ in $tarball"
start=$(date +%s)
if ! (cd "$src" && DEB_BUILD_OPTIONS="nocheck parallel=2" dpkg-buildpackage -us -uc -b) >"$W/build.log" 2>&1; then
    tail -n 60 "$W/build.log" >&2
    fail "dpkg-buildpackage"
fi
echo "built in $(($(date +%s) - start))s: $(cd "$W" && ls ./*.deb | tr '\n' ' ')"

echo "==> pkg-deb: lintian"
lintian --tag-display-limit 0 "$W"/*.changes >"$W/lintian.log" 2>&1 || true
cat "$W/lintian.log"
if grep -q '^E: ' "$W/lintian.log"; then
    fail "lintian reports errors"
fi
echo "lintian: $(grep -c '^E: ' "$W/lintian.log" || true) errors, $(grep -c '^W: ' "$W/lintian.log" || true) warnings"

echo "==> pkg-deb: apt-get install ./*.deb"
installed=1
if ! (cd "$W" && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends ./nstance-secrets_*.deb ./nstance-secrets-agent_*.deb) \
    >"$W/install.log" 2>&1; then
    tail -n 30 "$W/install.log" >&2
    fail "apt-get install"
fi
getent passwd nstance >/dev/null || fail "no system user nstance"
check_dir() { # PATH OWNER:GROUP MODE
    [ -d "$1" ] || fail "$1 missing"
    [ "$(stat -c '%U:%G %a' "$1")" = "$2 $3" ] || fail "$1 is $(stat -c '%U:%G %a' "$1"), want $2 $3"
}
check_dir /etc/nstance root:nstance 750
check_dir /var/lib/nstance nstance:nstance 700
check_dir /var/cache/nstance-secrets nstance:nstance 700
for f in /usr/bin/nstance-secrets /usr/sbin/nstance-secretsd /usr/sbin/nstance-secrets-agent \
    /lib/systemd/system/nstance-secretsd.service /lib/systemd/system/nstance-secrets-agent.service \
    /usr/share/man/man8/nstance-secrets.8.gz /usr/share/man/man8/nstance-secretsd.8.gz \
    /usr/share/man/man8/nstance-secrets-agent.8.gz /usr/share/man/man5/nstance-secrets.yaml.5.gz \
    /usr/share/bash-completion/completions/nstance-secrets \
    /usr/share/bash-completion/completions/nstance-secrets-agent \
    /usr/share/doc/nstance-secrets/examples/tpm-standby.yaml; do
    [ -e "$f" ] || fail "$f not installed"
done
for p in /usr/bin/nstance-secrets /usr/sbin/nstance-secretsd /usr/sbin/nstance-secrets-agent; do
    echo "$p: $("$p" --version)"
done
for ex in /usr/share/doc/nstance-secrets/examples/*.yaml; do
    /usr/bin/nstance-secrets -c "$ex" config check >/dev/null || fail "config check $ex"
done
if command -v systemd-analyze >/dev/null; then
    for u in nstance-secretsd nstance-secrets-agent; do
        # Informational: verify also runs `man` for Documentation= and wants the ExecStart binaries.
        systemd-analyze verify "/lib/systemd/system/$u.service" 2>&1 | sed 's/^/systemd-analyze verify: /' || true
        x=$(systemd-analyze security --offline=true "/lib/systemd/system/$u.service" 2>&1 |
            sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
        echo "systemd-analyze security $u.service: exposure ${x:-unknown}"
    done
fi

echo "==> pkg-deb: the demo flow against the installed programs"
unit=/lib/systemd/system/nstance-secretsd.service
execstart=$(sed -n 's/^ExecStart=//p' "$unit")
[ -n "$execstart" ] || fail "no ExecStart in $unit"
mkdir -p "$W/dev"
if ! NS_DEMO_CLI=/usr/bin/nstance-secrets NS_DEMO_SERVER="$execstart" NS_DEMO_AGENT=/usr/sbin/nstance-secrets-agent \
    NS_DEMO_DIR="$W/dev" bash "$root/contrib/demo.sh" >"$W/demo.log" 2>&1; then
    tail -n 40 "$W/demo.log" >&2
    fail "the demo flow against the installed programs"
fi
grep -q "listening on" "$W/dev/server.log" || fail "the server (ExecStart) did not listen"
tail -n 6 "$W/demo.log"

echo "==> pkg-deb: the unit's own lines, as its User=nstance, with /etc/nstance/secrets.yaml"
# A file KEK and a software CA: the packaging's paths and owners are what this checks, not a token.
runuser() { setpriv --reuid=nstance --regid=nstance --init-groups -- "$@"; }
umask 027
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >/etc/nstance/kek.key
chown nstance:nstance /etc/nstance/kek.key
chmod 0600 /etc/nstance/kek.key
cat >/etc/nstance/secrets.yaml <<'CONF'
cluster_id: pkg-test
storage: {backend: file, path: /var/lib/nstance/bucket}
encryption_key: {source: file, path: /etc/nstance/kek.key}
cache_dir: /var/cache/nstance-secrets
server: {listen: "127.0.0.1:0"}
CONF
chgrp nstance /etc/nstance/secrets.yaml
chmod 0640 /etc/nstance/secrets.yaml
umask 077
runuser /usr/bin/nstance-secrets ca init >/dev/null || fail "ca init as nstance"
runuser /usr/bin/nstance-secrets secret create registration-nonce.key --type ed25519 >/dev/null ||
    fail "secret create as nstance"
pre=$(sed -n 's/^ExecStartPre=//p' "$unit")
read -r -a pre_argv <<<"$pre"
runuser "${pre_argv[@]}" || fail "ExecStartPre ($pre) as nstance"
read -r -a start_argv <<<"$execstart"
# setpriv itself (not the function) so that $! is the server: setpriv execs it.
setpriv --reuid=nstance --regid=nstance --init-groups -- "${start_argv[@]}" 2>"$W/unit.log" &
unit_pid=$!
port=
for _ in $(seq 1 100); do
    port=$(sed -n 's/^nstance-secretsd: listening on .* (port \([0-9]*\)).*/\1/p' "$W/unit.log")
    [ -n "$port" ] && grep -qE ': ready$' "$W/unit.log" && break
    kill -0 "$unit_pid" 2>/dev/null || break
    sleep 0.1
done
[ -n "$port" ] && grep -qE ': ready$' "$W/unit.log" || {
    cat "$W/unit.log" >&2
    fail "ExecStart as nstance did not get ready"
}
curl -sk --max-time 5 "https://127.0.0.1:$port/health" | grep -q ok || fail "/health of the unit's server"
[ "$(stat -c %U /var/cache/nstance-secrets)" = nstance ] || fail "cache dir owner changed"
# ExecReload: SIGHUP, and the server keeps serving.
kill -HUP "$unit_pid"
sleep 0.5
kill -0 "$unit_pid" 2>/dev/null || fail "the server died on SIGHUP (ExecReload)"
curl -sk --max-time 5 "https://127.0.0.1:$port/health" | grep -q ok || fail "/health after SIGHUP"
kill -TERM "$unit_pid"
wait "$unit_pid" || fail "the server exited non-zero on SIGTERM"
unit_pid=
grep -q 'stopped' "$W/unit.log" || fail "no 'stopped' line"
echo "ExecStartPre, ExecStart (ready, /health), ExecReload (SIGHUP) and stop as nstance: ok"

echo "==> pkg-deb: apt-get purge"
rm -f /etc/nstance/secrets.yaml /etc/nstance/kek.key
rm -rf /var/lib/nstance/bucket
installed=0
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 purge -y -q nstance-secrets nstance-secrets-agent >"$W/purge.log" 2>&1 ||
    { tail -n 20 "$W/purge.log" >&2; fail "apt-get purge"; }
for f in /usr/bin/nstance-secrets /usr/sbin/nstance-secretsd /usr/sbin/nstance-secrets-agent \
    /lib/systemd/system/nstance-secretsd.service /var/cache/nstance-secrets; do
    [ ! -e "$f" ] || fail "$f still there after purge"
done
echo "pkg-deb: ok"
