#!/usr/bin/env bash
# The README's first command:  bash contrib/demo.sh  (from the repository root, as root on a fresh Debian 12).
#
# Installs what is missing, builds, and runs the main job on the embedded default: a SoftHSM development
# token and a file object store, both under ./dev/ in the working tree. It generates an Encryption Key in
# the token (once), stores a secret and reads it back, makes the cluster CA in the token, issues a
# certificate and a registration nonce. Then the server and the agent: nstance-secretsd on 127.0.0.1 (a
# free port; log in dev/server.log), an agent that enrolls with a fresh nonce (state in dev/agent/) and
# syncs its group's files under dev/root/ (--root: nothing is written outside dev/), the files shown and
# checked against `secret export` and the CA bundle; the server is stopped by its PID, on failure too.
# Running it again reuses the token and keys and makes the agent's state and files afresh.
#
# Afterwards, use the same set-up by hand:
#   export SOFTHSM2_CONF=$PWD/dev/softhsm2.conf
#   _build/nstance-secrets -c dev/config.yaml list
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

# NS_DEMO_CLI, NS_DEMO_SERVER (a command line: the unit's ExecStart), NS_DEMO_AGENT and NS_DEMO_DIR run the
# same flow against installed programs (contrib/pkg-deb.sh): nothing is installed or built then.
if [ -z "${NS_DEMO_CLI:-}" ]; then
    bash contrib/deps.sh

    if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ]; then
        echo "==> autoreconf"
        autoreconf -fi >/dev/null 2>&1
    fi
    mkdir -p _build
    if [ ! -f _build/Makefile ]; then
        echo "==> configure"
        (cd _build && ../configure -q)
    fi
    echo "==> make"
    make --no-print-directory -s -C _build -j2 nstance-secrets nstance-secretsd nstance-secrets-agent >/dev/null
fi

cli=${NS_DEMO_CLI:-$root/_build/nstance-secrets}
read -r -a server <<<"${NS_DEMO_SERVER:-$root/_build/nstance-secretsd}"
agent=${NS_DEMO_AGENT:-$root/_build/nstance-secrets-agent}
dev=${NS_DEMO_DIR:-$root/dev}
module=
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so; do
    [ -f "$m" ] && module=$m && break
done
[ -n "$module" ] || { echo "demo.sh: SoftHSM module not found" >&2; exit 1; }

umask 077
mkdir -p "$dev/tokens" "$dev/bucket"
export SOFTHSM2_CONF=$dev/softhsm2.conf
cat >"$SOFTHSM2_CONF" <<CONF
directories.tokendir = $dev/tokens
objectstore.backend = file
log.level = ERROR
CONF

# A development token with random PINs kept in files only root can read: never on a command line that
# lingers (softhsm2-util takes them as arguments for this one-time set-up only).
if ! softhsm2-util --show-slots 2>/dev/null | grep -q 'Label:.*nstance-dev'; then
    echo "==> creating SoftHSM development token 'nstance-dev' in dev/tokens"
    head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dev/pin"
    head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dev/so-pin"
    softhsm2-util --init-token --free --label nstance-dev --pin "$(cat "$dev/pin")" \
        --so-pin "$(cat "$dev/so-pin")" >/dev/null
fi
chmod 600 "$dev/pin" "$dev/so-pin"

uri="pkcs11:token=nstance-dev;object=kek-1?module-path=$module&pin-source=file:$dev/pin"
ca_uri="pkcs11:token=nstance-dev;object=ca-1?module-path=$module&pin-source=file:$dev/pin"
cat >"$dev/config.yaml" <<CONF
# Development config written by contrib/demo.sh: SoftHSM token + local folder store.
cluster_id: dev
storage:
  backend: file
  path: bucket
encryption_key:
  source: pkcs11
  uri: "$uri"
  mechanism: aes-gcm
cache_dir: cache
ca:
  keys: ["$ca_uri"]
  subject: {cn: "nstance dev CA", o: "nstance dev"}
shard: dev
server:
  listen: "127.0.0.1:0"          # a free port: the server's first line names it
  names: [localhost, 127.0.0.1]
  threads: 2
groups: {demo: demo}
templates:
  demo:
    files:
      - {path: /etc/nstance-demo/signing.pem, secret: demo-signing.key, format: pem-bundle, mode: "0600", owner: $(id -un), group: $(id -gn)}
      - {path: /etc/nstance-demo/signing.pub, secret: demo-signing.key, format: public-pem-bundle, mode: "0644", owner: $(id -un), group: $(id -gn)}
      - {path: /etc/nstance-demo/ca.crt, ca_bundle: true, mode: "0644", owner: $(id -un), group: $(id -gn)}
CONF

if ! "$cli" -c "$dev/config.yaml" kek list >/dev/null 2>&1; then
    echo "==> generating the Encryption Key in the token"
    "$cli" kek generate --uri "$uri" --mechanism aes-gcm
fi
echo "==> kek list"
"$cli" -c "$dev/config.yaml" kek list

secret="hello from nstance-secrets, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "==> put demo/hello.txt"
printf '%s\n' "$secret" | "$cli" -c "$dev/config.yaml" put demo/hello.txt
echo "==> get demo/hello.txt"
got=$("$cli" -c "$dev/config.yaml" get demo/hello.txt)
printf '%s\n' "$got"
if [ "$got" != "$secret" ]; then
    echo "demo.sh: the secret read back differs from the one stored" >&2
    exit 1
fi
echo "==> a multi-key secret: create once; retire the oldest key, rotate in a new one, show both"
if ! "$cli" -c "$dev/config.yaml" secret show demo-signing.key >/dev/null 2>&1; then
    "$cli" -c "$dev/config.yaml" secret create demo-signing.key --type ed25519
fi
"$cli" -c "$dev/config.yaml" secret retire demo-signing.key >/dev/null 2>&1 || true # refuses the only key
"$cli" -c "$dev/config.yaml" secret rotate demo-signing.key
"$cli" -c "$dev/config.yaml" secret show demo-signing.key
echo "==> the cluster CA: its key is made in the token (P-256) once; issue an agent certificate with it"
if ! "$cli" -c "$dev/config.yaml" ca list >/dev/null 2>&1; then
    "$cli" -c "$dev/config.yaml" ca init
fi
"$cli" -c "$dev/config.yaml" ca list
openssl genpkey -algorithm ed25519 -out "$dev/agent.key" 2>/dev/null
openssl pkey -in "$dev/agent.key" -pubout -out "$dev/agent.pub"
"$cli" -c "$dev/config.yaml" ca issue --public-key "$dev/agent.pub" --cn vm-1 --tenant demo --role agent \
    --ttl 1h -o "$dev/agent.crt"
"$cli" -c "$dev/config.yaml" ca bundle -o "$dev/ca.crt"
openssl verify -CAfile "$dev/ca.crt" "$dev/agent.crt"
echo "==> a registration nonce (software Ed25519 key in the registration-nonce.key secret), verified"
if ! "$cli" -c "$dev/config.yaml" secret show registration-nonce.key >/dev/null 2>&1; then
    "$cli" -c "$dev/config.yaml" secret create registration-nonce.key --type ed25519
fi
"$cli" -c "$dev/config.yaml" nonce issue --kind agent --sub vm-2 --tenant demo --group cp >"$dev/nonce.jwt"
"$cli" -c "$dev/config.yaml" nonce verify --file "$dev/nonce.jwt" --kind agent
echo "==> verify"
"$cli" -c "$dev/config.yaml" verify

echo "==> the server and an agent: a nonce for group demo, what the files must hold (before the server holds the token)"
rm -rf "$dev/agent" "$dev/root"
mkdir -p "$dev/agent" "$dev/root"
"$cli" -c "$dev/config.yaml" nonce issue --kind agent --sub demo-vm --tenant demo --group demo >"$dev/agent/nonce.jwt"
"$cli" -c "$dev/config.yaml" secret export demo-signing.key --format pem-bundle -o "$dev/agent/want-signing.pem"
"$cli" -c "$dev/config.yaml" secret export demo-signing.key --format public-pem-bundle -o "$dev/agent/want-signing.pub"

server_pid=
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" 2>/dev/null || true
        echo "==> nstance-secretsd (pid $server_pid) stopped"
    fi
    server_pid=
}
trap stop_server EXIT
: >"$dev/server.log"
"${server[@]}" -c "$dev/config.yaml" 2>"$dev/server.log" &
server_pid=$!
port=
for _ in $(seq 1 100); do
    port=$(sed -n 's/^nstance-secretsd: listening on .* (port \([0-9][0-9]*\)).*$/\1/p' "$dev/server.log")
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$port" ]; then
    cat "$dev/server.log" >&2
    echo "demo.sh: nstance-secretsd did not start" >&2
    exit 1
fi
url=https://127.0.0.1:$port
# Ready once /health is 200 with a certificate from our CA (until then it answers with a throw-away one).
for _ in $(seq 1 300); do
    curl -sf --cacert "$dev/ca.crt" "$url/health" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if ! curl -sf --cacert "$dev/ca.crt" "$url/health" >/dev/null 2>&1; then
    cat "$dev/server.log" >&2
    echo "demo.sh: nstance-secretsd did not become ready" >&2
    exit 1
fi
echo "==> nstance-secretsd listening on $url (pid $server_pid, log dev/server.log)"
echo "==> nstance-secrets-agent enroll (identity in dev/agent/state)"
"$agent" enroll --server "$url" --ca "$dev/ca.crt" --nonce-file "$dev/agent/nonce.jwt" --dir "$dev/agent/state" \
    --hostname demo-vm.localdomain --ipv4 127.0.0.1
openssl x509 -in "$dev/agent/state/identity.crt" -noout -subject -ext subjectAltName
echo "==> nstance-secrets-agent sync --root dev/root"
"$agent" sync --server "$url" --dir "$dev/agent/state" --root "$dev/root"
"$agent" sync --server "$url" --dir "$dev/agent/state" --root "$dev/root"
echo "==> the files written (mode, owner, sha256 against secret export and the CA bundle)"
check_file() { # PATH WANT
    local got want
    got=$(sha256sum "$dev/root$1" | cut -d' ' -f1)
    want=$(sha256sum "$2" | cut -d' ' -f1)
    printf '  %s  %s  %s  sha256 %s' "$(stat -c %a "$dev/root$1")" "$(stat -c %U:%G "$dev/root$1")" "dev/root$1" \
        "${got:0:16}..."
    if [ "$got" != "$want" ]; then
        printf '  DIFFERS from %s\n' "${2#"$root"/}"
        echo "demo.sh: dev/root$1 is not what the server should have sent" >&2
        exit 1
    fi
    printf '  matches %s\n' "${2#"$root"/}"
}
check_file /etc/nstance-demo/signing.pem "$dev/agent/want-signing.pem"
check_file /etc/nstance-demo/signing.pub "$dev/agent/want-signing.pub"
check_file /etc/nstance-demo/ca.crt "$dev/ca.crt"
stop_server
trap - EXIT
echo
echo "OK: the secret was encrypted under the token's key, stored in dev/bucket/cluster/secret/demo/hello.txt"
echo "and read back; the agent enrolled with the server and wrote its files under dev/root/. To use this"
echo "set-up yourself:"
echo "  export SOFTHSM2_CONF=$SOFTHSM2_CONF"
echo "  $cli -c dev/config.yaml list"
echo "  ${server[0]} -c dev/config.yaml      # then the agent as above (doc/agent.md)"
