#!/usr/bin/env bash
# Covers: a second real software token, the NSS softoken (Debian libnss3), loaded by the p11-kit proxy from a
# module file whose x-init-reserved line passes NSS its init string (helper ns_nss_token).
#
# In detail: on the "NSS Certificate DB" token, aes-gcm and rsa-oaep KEKs made by `kek generate` seal and open
# secrets (put/get), a blob under a file KEK is rewrapped onto each and `verify` passes, and the envelope names
# the token KEK's id and mechanism; an aes-gcm blob is rewrapped onto the rsa-oaep KEK and back. A P-256 CA
# key generated in the token by `ca init --key` issues a certificate that openssl verifies (and whose issuer
# key is the token's); a P-256 nonce key made with pkcs11-tool signs an ES256 JWT that PyJWT verifies with the
# public key read from the token, and `nonce verify` accepts. aes-kwp on NSS: see the end of this file.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
ns_need openssl
[ -x /usr/bin/python3 ] || {
    echo "/usr/bin/python3 not installed"
    exit 99
}
/usr/bin/python3 -c 'import jwt, cryptography' 2>/dev/null || {
    echo "python3-jwt (PyJWT) with python3-cryptography not installed"
    exit 99
}

PIN=nss-pin-1357
ns_nss_token "$PIN"
U=$NSS_URI
Q=$NSS_Q
nss_p11() {
    local rc=0
    "${NSS_RUN[@]}" pkcs11-tool --module "$NSS_PROXY" --token-label "NSS Certificate DB" --login --pin "$PIN" \
        "$@" >"$T/p11.out" 2>"$T/p11.err" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "pkcs11-tool (NSS) $* failed (exit $rc):" >&2
        cat "$T/p11.out" "$T/p11.err" >&2
    fi
    return "$rc"
}

B=$T/bucket
(
    umask 077
    head -c 32 /dev/urandom >"$T/old.key"
)
ns_ring_config "$T/config.yaml" nss "$B" "{source: file, path: $T/old.key}"
head -c 3000 /dev/urandom >"$T/plain"
expect_rc 0 put old "$T/plain"

for m in aes-gcm rsa-oaep; do
    expect_rc 0 kek generate --uri "$U;object=kek-$m?$Q" --mechanism "$m"
done
# The same label again: refused, nothing made.
expect_rc 7 kek generate --uri "$U;object=kek-aes-gcm?$Q" --mechanism aes-gcm

kek_config() { # PRIMARY-MECH [OLD-MECH]
    {
        printf 'cluster_id: nss\nstorage: {backend: file, path: %s}\ncache_dir: %s\n' "$B" "$T/cache"
        printf 'encryption_key: {source: pkcs11, uri: "%s;object=kek-%s?%s", mechanism: %s}\n' "$U" "$1" "$Q" "$1"
        printf 'old_encryption_keys:\n  - {source: file, path: %s}\n' "$T/old.key"
        if [ -n "${2:-}" ]; then
            printf '  - {source: pkcs11, uri: "%s;object=kek-%s?%s", mechanism: %s}\n' "$U" "$2" "$Q" "$2"
        fi
        printf 'ca:\n  keys: ["%s;object=ca;type=private?%s"]\n' "$U" "$Q"
        printf 'registration_nonce:\n  keys: ["%s;object=nonce;type=private?%s"]\n' "$U" "$Q"
    } >"$T/config.yaml"
}

for step in aes-gcm: rsa-oaep:aes-gcm aes-gcm:rsa-oaep; do
    IFS=: read -r m other <<<"$step"
    kek_config "$m" "$other"
    expect_rc 0 put "new-$m" "$T/plain"
    expect_rc 0 get "new-$m" -o "$T/got"
    cmp -s "$T/plain" "$T/got" || fail "$m round trip on the NSS token"
    expect_rc 0 rewrap
    expect_rc 0 verify
    assert_contains "$T/out" "0 failed" "verify on $m"
    for name in old new-aes-gcm; do
        expect_rc 0 get "$name" -o "$T/got"
        cmp -s "$T/plain" "$T/got" || fail "$name rewrapped onto $m"
    done
    expect_rc 0 kek list
    ID=$(awk '$1 == "primary" { print $2 }' "$T/out")
    [ -n "$ID" ] || fail "kek list names no primary: $(cat "$T/out")"
    python3 "$top_srcdir/contrib/envelope-decode.py" "$B/cluster/secret/old" old >"$T/decoded" 2>&1 ||
        fail "envelope-decode.py rejects the blob"
    assert_contains "$T/decoded" "kek id       $ID" "rewrap moved the blob onto the NSS $m KEK"
    case $m in
    aes-gcm) assert_contains "$T/decoded" "mechanism    1 (aes-gcm)" ;;
    rsa-oaep) assert_contains "$T/decoded" "mechanism    3 (rsa-oaep)" ;;
    esac
done

# CA: the key generated in the token by ca init (P-256 by default).
ns_ca_token_issue "$U;object=ca;type=private?$Q"
nss_p11 --read-object --type pubkey --label ca -o "$T/ca-pub.der" || fail "reading the CA public key"
openssl pkey -pubin -inform DER -in "$T/ca-pub.der" -pubout -out "$T/ca-token.pub" 2>/dev/null ||
    fail "the token's CA public key is not a DER SubjectPublicKeyInfo"
openssl x509 -in "$T/ca.pem" -noout -pubkey >"$T/ca-cert.pub"
cmp -s "$T/ca-token.pub" "$T/ca-cert.pub" || fail "the CA certificate's key is not the token's key"

# Nonce key: a P-256 key pair made with pkcs11-tool; the JWT checked by PyJWT with the token's public key.
nss_p11 --keypairgen --key-type EC:prime256v1 --label nonce --id 0d || fail "pkcs11-tool: nonce key"
nss_p11 --read-object --type pubkey --label nonce -o "$T/nonce-pub.der" || fail "reading the nonce public key"
openssl pkey -pubin -inform DER -in "$T/nonce-pub.der" -pubout -out "$T/nonce.pub" 2>/dev/null ||
    fail "the token's nonce public key is not a DER SubjectPublicKeyInfo"
expect_rc 0 nonce issue --kind agent --sub vm-1 --tenant acme
tok=$(cat "$T/out")
case $tok in eyJhbGciOiJFUzI1NiIs*) ;; *) fail "not an ES256 JWT: $tok" ;; esac
/usr/bin/python3 - "$tok" "$T/nonce.pub" >"$T/pyjwt.out" 2>&1 <<'PY' || fail "PyJWT rejects the nonce: $(cat "$T/pyjwt.out")"
import sys
import jwt
tok, pub = sys.argv[1], open(sys.argv[2], "rb").read()
claims = jwt.decode(tok, pub, algorithms=["ES256"], options={"verify_aud": False})
assert claims["sub"] == "vm-1", claims
assert claims["tenant"] == "acme", claims
print("ok", claims["sub"])
PY
expect_rc 0 nonce verify "$tok"
# A signature over other claims does not verify (PyJWT is not accepting anything).
bad=$(printf '%s' "$tok" | awk -F. '{ print $1 "." $2 "x." $3 }')
if /usr/bin/python3 -c 'import sys, jwt; jwt.decode(sys.argv[1], open(sys.argv[2], "rb").read(), algorithms=["ES256"])' \
    "$bad" "$T/nonce.pub" 2>/dev/null; then
    fail "PyJWT accepts a tampered nonce"
fi

# aes-kwp: NSS lists CKM_AES_KEY_WRAP_PAD (0x210A) for wrap and unwrap, but its softoken implements it as RFC 3394
# key wrap over input padded PKCS #5-style to 8 bytes (pkcs11c.c sets doPad for it; RFC 5649 is
# CKM_AES_KEY_WRAP_KWP, 0x210B, which it also lists), so a 32-byte DEK wraps to 48 bytes, not RFC 5649's 40
# (measured with C_WrapKey on NSS 3.87: 0x210A gives 48 bytes, 0x210B 40): the same trap as AWS CloudHSM.
# The KEK's start-up check wraps a fixed key and measures the result, so `kek generate` refuses the mechanism
# (exit 5) naming the reason and what to use instead, and so does every command with such a KEK: sealing is
# refused and writes nothing, never a blob another token could not open. Use aes-gcm or rsa-oaep on NSS
# (doc/tokens.md).
expect_rc 5 kek generate --uri "$U;object=kek-kwp?$Q" --mechanism aes-kwp
assert_contains "$T/err" "wraps 32 bytes into 48, not 40: it is not RFC 5649"
assert_contains "$T/err" "use mechanism aes-gcm or rsa-oaep"
ns_config "$T/kwp.yaml" <<EOF
cluster_id: nss
storage: {backend: file, path: $T/bucket-kwp}
encryption_key: {source: pkcs11, uri: "$U;object=kek-kwp?$Q", mechanism: aes-kwp}
EOF
NS_RC=0
"$NS_CLI" -c "$T/kwp.yaml" put x "$T/plain" >"$T/out" 2>"$T/err" || NS_RC=$?
assert_eq "$NS_RC" 5 "aes-kwp on NSS: exit"
assert_contains "$T/err" "not RFC 5649"
[ ! -s "$T/out" ] || fail "aes-kwp on NSS: printed on stdout"
[ -z "$(find "$T/bucket-kwp" -type f 2>/dev/null)" ] || fail "aes-kwp on NSS wrote to the bucket"

echo PASS
