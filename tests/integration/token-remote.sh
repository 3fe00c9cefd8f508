#!/usr/bin/env bash
# Covers: a remote token: the SoftHSM token forwarded by `p11-kit server` on a unix socket, used through
# p11-kit's client module (p11-kit-client.so, P11_KIT_SERVER_ADDRESS).
#
# In detail: through the client module, an rsa-oaep KEK (`kek generate` over the wire) does put/get/verify
# and a rewrap from a file KEK; a P-256 CA key made with pkcs11-tool on the real token issues certificates
# (`ca init --key`, `ca issue`, openssl verify); a P-256 nonce key signs ES256 JWTs that `nonce verify`
# accepts. The KEK mechanisms the remoting protocol drops (aes-gcm, aes-kwp; both work on the same token
# directly) are refused at start-up, naming the token, the client module and the mechanism (exit 5), with the
# bucket unchanged; with the server stopped, commands exit 5 and write nothing.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
ns_need openssl

PIN=rem-pin-2468
ns_token rem "$PIN"
DIRECT_Q="module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-rem"
for k in gcm:aes-gcm kwp:aes-kwp; do
    expect_rc 0 kek generate --uri "pkcs11:token=rem;object=kek-${k%%:*}?$DIRECT_Q" --mechanism "${k#*:}"
done
ns_p11 rem "$PIN" --keypairgen --key-type EC:prime256v1 --label ca --id 0c || fail "pkcs11-tool: CA key"
ns_p11 rem "$PIN" --keypairgen --key-type EC:prime256v1 --label nonce --id 0d || fail "pkcs11-tool: nonce key"

ns_p11kit_server "$SOFTHSM_MODULE" "pkcs11:token=rem"
C=$P11KIT_CLIENT_MODULE
Q="module-path=$C&pin-source=file:$T/pin-rem"
expect_rc 0 kek generate --uri "pkcs11:token=rem;object=kek-rsa?$Q" --mechanism rsa-oaep

B=$T/bucket
head -c 32 /dev/urandom >"$T/old.key"
chmod 0600 "$T/old.key"
ns_config <<EOF
cluster_id: remote
storage: {backend: file, path: $B}
encryption_key: {source: file, path: $T/old.key}
EOF
head -c 2000 /dev/urandom >"$T/plain"
expect_rc 0 put old "$T/plain"
ns_config <<EOF
cluster_id: remote
storage: {backend: file, path: $B}
cache_dir: $T/cache
encryption_key: {source: pkcs11, uri: "pkcs11:token=rem;object=kek-rsa;type=private?$Q", mechanism: rsa-oaep}
old_encryption_keys:
  - {source: file, path: $T/old.key}
ca:
  keys: ["pkcs11:token=rem;object=ca;type=private?$Q"]
registration_nonce:
  keys: ["pkcs11:token=rem;object=nonce;type=private?$Q"]
EOF
expect_rc 0 put new "$T/plain"
expect_rc 0 get new -o "$T/got"
cmp -s "$T/plain" "$T/got" || fail "rsa-oaep round trip through p11-kit remoting"
expect_rc 0 rewrap
expect_rc 0 get old -o "$T/got"
cmp -s "$T/plain" "$T/got" || fail "rewrapped blob through p11-kit remoting"
expect_rc 0 verify
expect_rc 0 kek list
ID=$(awk '$1 == "primary" { print $2 }' "$T/out")
python3 "$top_srcdir/contrib/envelope-decode.py" "$B/cluster/secret/old" old >"$T/decoded" 2>&1 ||
    fail "envelope-decode.py rejects the blob"
assert_contains "$T/decoded" "kek id       $ID" "rewrap moved the blob onto the remote KEK"
assert_contains "$T/decoded" "mechanism    3 (rsa-oaep)"

ns_ca_token_issue "pkcs11:token=rem;object=ca;type=private?$Q"
expect_rc 0 nonce issue --kind agent --sub vm-1 --tenant acme
tok=$(cat "$T/out")
case $tok in eyJhbGciOiJFUzI1NiIs*) ;; *) fail "not an ES256 JWT: $tok" ;; esac
expect_rc 0 nonce verify "$tok"

# What remoting drops: refused at start-up with the mechanism named; the bucket is unchanged.
snapshot() { (cd "$B" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
snapshot >"$T/before"
for k in gcm:aes-gcm:CKM_AES_GCM kwp:aes-kwp:CKM_AES_KEY_WRAP_PAD; do
    IFS=: read -r short mech ckm <<<"$k"
    ns_config "$T/$short-direct.yaml" <<EOF
cluster_id: remote
storage: {backend: file, path: $T/bucket-direct}
encryption_key: {source: pkcs11, uri: "pkcs11:token=rem;object=kek-$short?$DIRECT_Q", mechanism: $mech}
EOF
    "$NS_CLI" -c "$T/$short-direct.yaml" put x "$T/plain" || fail "$mech works on the token directly"
    ns_config "$T/$short.yaml" <<EOF
cluster_id: remote
storage: {backend: file, path: $B}
encryption_key: {source: pkcs11, uri: "pkcs11:token=rem;object=kek-$short?$Q", mechanism: $mech}
EOF
    NS_RC=0
    "$NS_CLI" -c "$T/$short.yaml" get new >"$T/out" 2>"$T/err" || NS_RC=$?
    assert_eq "$NS_RC" 5 "$mech through p11-kit remoting: exit"
    assert_contains "$T/err" "token 'rem' (module $C) does not offer mechanism $ckm ($mech)"
    [ ! -s "$T/out" ] || fail "$mech: printed on stdout"
done

# The server gone: token unavailable, nothing written.
for pid in "${NS_BG_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
expect_rc 5 put new2 "$T/plain"
expect_rc 5 get new
[ ! -s "$T/out" ] || fail "get printed on stdout with the server gone"
snapshot >"$T/after"
cmp -s "$T/before" "$T/after" || fail "the bucket changed"
echo PASS
