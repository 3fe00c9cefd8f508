#!/usr/bin/env bash
# The README's first command:  bash contrib/demo.sh  (from the repository root, as root on a fresh Debian 12).
#
# Installs what is missing, builds, and runs the main job on the embedded default: a SoftHSM development
# token and a file object store, both under ./dev/ in the working tree. It generates an Encryption Key in
# the token (once), stores a secret and reads it back. Running it again reuses the token and key.
#
# Afterwards, use the same set-up by hand:
#   export SOFTHSM2_CONF=$PWD/dev/softhsm2.conf
#   _build/nstance-secrets -c dev/config.yaml list
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

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
make --no-print-directory -s -C _build -j2 nstance-secrets >/dev/null

cli=$root/_build/nstance-secrets
dev=$root/dev
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
echo
echo "OK: the secret was encrypted under the token's key, stored in dev/bucket/cluster/secret/demo/hello.txt"
echo "and read back. To use this set-up yourself:"
echo "  export SOFTHSM2_CONF=$SOFTHSM2_CONF"
echo "  $cli -c dev/config.yaml list"
