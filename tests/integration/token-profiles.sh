#!/usr/bin/env bash
# Covers: the token emulations of tests/tools/faulty-pkcs11.c (FAULTY_PKCS11_PROFILE) around SoftHSM: an AWS
# CloudHSM that replaces the caller's GCM IV and whose CKM_AES_KEY_WRAP_PAD is PKCS #5-padded key wrap, and a
# FIPS-mode token that refuses caller GCM IVs, plaintext secret-key import and non-sensitive secret keys.
#
# In detail, per profile, through the faulty module: `kek generate` (aes-gcm, aes-kwp, rsa-oaep) works
# (sensitive keys only); on cloudhsm aes-gcm put/get/verify/rewrap work, the stored wrap IV is the token's
# (the profile fired: "gcm-iv-replaced"), the KEK id is the CKA_CHECK_VALUE one (the INFO line) and the same on
# every start, and aes-kwp is refused at start-up (exit 5) naming PKCS #5 padding and aes-gcm/rsa-oaep
# ("kwp-pkcs5" fired); on fips aes-gcm is refused at start-up (exit 5) naming the FIPS-mode IV refusal and
# rsa-oaep ("gcm-external-iv" fired), aes-kwp is refused naming plaintext key import and rsa-oaep
# ("plaintext-key-import" fired, at `kek generate` and at start-up), and rsa-oaep put/get/verify work; on each, `ca init`/`ca issue` with a token
# P-256 key and `nonce issue` with a token P-256 key (the JWT checked by PyJWT) work. fips-2.40 is fips without
# the PKCS#11 3.0 interface: aes-gcm refused there; on fips (3.0: C_GetInterface, CKF_MESSAGE_ENCRYPT) aes-gcm
# wraps with C_EncryptMessage and a token-generated IV ("message-encrypt" fired; the only caller IV offered is
# the id's fixed-IV attempt at start-up), its id from CKA_CHECK_VALUE, put/get/rewrap/verify work. On
# private (secret keys must be private) aes-kwp put/get work through the DEK template fallback, which is
# logged ("public-secret-key" fired on wrap and on unwrap).
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
ns_faulty_module
ns_need_pyjwt

PIN=prof-pin-2468
ns_token prof "$PIN"
ns_p11 prof "$PIN" --keypairgen --key-type EC:prime256v1 --label nonce-ec --id 07 || fail "keypairgen EC"
Q="module-path=$FAULTY_MODULE&pin-source=file:$T/pin-prof"
B=$T/bucket
uri() { printf 'pkcs11:token=prof;object=%s?%s' "$1" "$Q"; }
kek_config() { # LABEL MECH [LABEL2 MECH2]: config with that key as primary (and the second as an older key)
    {
        printf 'cluster_id: profiles\nstorage: {backend: file, path: %s}\nshard: s1\n' "$B"
        printf 'encryption_key: {source: pkcs11, uri: "%s", mechanism: %s}\n' "$(uri "$1")" "$2"
        if [ -n "${3:-}" ]; then
            printf 'old_encryption_keys:\n  - {source: pkcs11, uri: "%s", mechanism: %s}\n' "$(uri "$3")" "$4"
        fi
        printf 'ca:\n  keys: ["pkcs11:token=prof;object=ca-%s;type=private?%s"]\n  cert_ttl: 2h\n' "$PROFILE" "$Q"
        printf 'registration_nonce:\n  issuer: nstance-test\n  keys:\n    - "%s"\n' "$(uri nonce-ec)"
    } | ns_config
}
primary_id() { expect_rc 0 kek list >/dev/null; awk '$1 == "primary" { print $2 }' "$T/out"; }
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/leaf.key" 2>/dev/null
openssl pkey -in "$T/leaf.key" -pubout -out "$T/leaf.pub"
head -c 3000 /dev/urandom >"$T/plain"

ca_and_nonce() {
    expect_rc 0 ca init --key "pkcs11:token=prof;object=ca-$PROFILE;type=private?$Q" --type ecdsa-p256
    expect_rc 0 ca issue --public-key "$T/leaf.pub" --cn vm-1 --tenant acme --role agent -o "$T/leaf.pem"
    openssl x509 -in "$T/leaf.pem" -noout -subject >"$T/subj" || fail "ca issue: no certificate ($PROFILE)"
    assert_contains "$T/subj" "vm-1" "ca issue: the certificate's subject ($PROFILE)"
    expect_rc 0 nonce jwks
    cp "$T/out" "$T/jwks.json"
    expect_rc 0 nonce issue --kind agent --sub vm-1 --tenant acme --shard default
    "$PY" - "$T/jwks.json" "$(cat "$T/out")" <<'EOF' || fail "PyJWT rejects the nonce JWT ($PROFILE)"
import json, sys, jwt
keys = json.load(open(sys.argv[1]))["keys"]
jwt.decode(sys.argv[2], jwt.PyJWK(keys[0]).key, algorithms=[keys[0]["alg"]], issuer="nstance-test",
           options={"verify_aud": False})
EOF
}

# ---- cloudhsm ----
PROFILE=cloudhsm
export FAULTY_PKCS11_PROFILE=$PROFILE
echo "# profile $PROFILE"
for k in g1:aes-gcm g2:aes-gcm; do
    expect_rc 0 kek generate --uri "$(uri "$PROFILE-${k%%:*}")" --mechanism "${k#*:}"
done
# the key is made, but its first use (the id) finds the wrap is not RFC 5649
expect_rc 5 kek generate --uri "$(uri "$PROFILE-kwp")" --mechanism aes-kwp
assert_contains "$T/err" "not RFC 5649" "kek generate aes-kwp on cloudhsm: reason"
kek_config "$PROFILE-g1" aes-gcm
: >"$FAULTY_PKCS11_LOG"
expect_rc 0 -v kek list
assert_contains "$T/err" "CKA_CHECK_VALUE" "the id comes from CKA_CHECK_VALUE on a token that replaces IVs"
id1=$(primary_id)
ns_fault_fired "profile cloudhsm: gcm-iv-replaced"
[ "$(primary_id)" = "$id1" ] || fail "the aes-gcm id changes between starts on cloudhsm"
: >"$FAULTY_PKCS11_LOG"
expect_rc 0 put a "$T/plain"
ns_fault_fired "profile cloudhsm: gcm-iv-replaced"
expect_rc 0 get a
cmp -s "$T/out" "$T/plain" || fail "get a: wrong plaintext ($PROFILE)"
expect_rc 0 put b "$T/plain"
# the two wrap IVs (bytes 26..37) differ and are not zero
python3 - "$B/cluster/secret/a" "$B/cluster/secret/b" <<'EOF' || fail "wrap IVs"
import sys
a, b = (open(p, "rb").read()[26:38] for p in sys.argv[1:3])
assert a != b and a != bytes(12) and b != bytes(12), (a, b)
EOF
kek_config "$PROFILE-g2" aes-gcm "$PROFILE-g1" aes-gcm
id2=$(primary_id)
expect_rc 0 rewrap
expect_rc 0 verify
assert_contains "$T/out" "$id2" "verify lists the new primary id"
expect_rc 0 get a
cmp -s "$T/out" "$T/plain" || fail "get a after rewrap ($PROFILE)"
kek_config "$PROFILE-kwp" aes-kwp
: >"$FAULTY_PKCS11_LOG"
expect_rc 5 put c "$T/plain"
assert_contains "$T/err" "not RFC 5649" "aes-kwp refused: reason"
assert_contains "$T/err" "use mechanism aes-gcm or rsa-oaep" "aes-kwp refused: what to use"
ns_fault_fired "profile cloudhsm: kwp-pkcs5"
kek_config "$PROFILE-g1" aes-gcm
ca_and_nonce

# ---- fips-2.40: the refusals, no PKCS#11 3.0 interface ----
PROFILE=fips-2.40
export FAULTY_PKCS11_PROFILE=$PROFILE
echo "# profile $PROFILE"
rm -rf "$B"
# aes-gcm and aes-kwp keys are made (sensitive) but refused at their first use, naming what to use instead
: >"$FAULTY_PKCS11_LOG"
expect_rc 5 kek generate --uri "$(uri fips-gcm)" --mechanism aes-gcm
assert_contains "$T/err" "refuses AES-GCM with an IV chosen by the caller" "aes-gcm refused on $PROFILE: reason"
assert_contains "$T/err" "use mechanism rsa-oaep" "aes-gcm refused on $PROFILE: what to use"
ns_fault_fired "profile $PROFILE: gcm-external-iv"
: >"$FAULTY_PKCS11_LOG"
expect_rc 5 kek generate --uri "$(uri fips-kwp)" --mechanism aes-kwp
assert_contains "$T/err" "refuses to import a plaintext secret key" "aes-kwp refused on $PROFILE: reason"
assert_contains "$T/err" "use mechanism rsa-oaep" "aes-kwp refused on $PROFILE: what to use"
ns_fault_fired "profile $PROFILE: plaintext-key-import"
assert_not_contains "$FAULTY_PKCS11_LOG" "non-sensitive-key" "kek generate makes sensitive keys only"
kek_config fips-kwp aes-kwp
expect_rc 5 put a "$T/plain"
assert_contains "$T/err" "refuses to import a plaintext secret key" "aes-kwp refused at start-up on $PROFILE"
expect_rc 0 kek generate --uri "$(uri fips-rsa)" --mechanism rsa-oaep
kek_config fips-rsa rsa-oaep
expect_rc 0 put a "$T/plain"
expect_rc 0 get a
cmp -s "$T/out" "$T/plain" || fail "get a: wrong plaintext ($PROFILE)"
expect_rc 0 verify

# ---- fips: the same token with the PKCS#11 3.0 message API ----
PROFILE=fips
export FAULTY_PKCS11_PROFILE=$PROFILE
echo "# profile $PROFILE"
kek_config fips-gcm aes-gcm fips-rsa rsa-oaep
: >"$FAULTY_PKCS11_LOG"
expect_rc 0 -v kek list
assert_contains "$T/err" "PKCS#11 3.0 message API" "aes-gcm says it uses the message API on $PROFILE"
assert_contains "$T/err" "CKA_CHECK_VALUE" "the id comes from CKA_CHECK_VALUE on $PROFILE"
ns_fault_fired "profile fips: gcm-external-iv"
id1=$(primary_id)
[ "$(primary_id)" = "$id1" ] || fail "the aes-gcm id changes between starts on $PROFILE"
: >"$FAULTY_PKCS11_LOG"
expect_rc 0 put b "$T/plain"
ns_fault_fired "profile fips: message-encrypt"
# one refused caller IV per process: the id's fixed-IV attempt at start-up, none for the wrap
[ "$(grep -c "gcm-external-iv" "$FAULTY_PKCS11_LOG")" = 1 ] || fail "a caller IV offered when wrapping on $PROFILE"
expect_rc 0 get b
cmp -s "$T/out" "$T/plain" || fail "get b: wrong plaintext ($PROFILE)"
expect_rc 0 rewrap
expect_rc 0 verify
assert_contains "$T/out" "$id1" "verify lists the aes-gcm id ($PROFILE)"
assert_not_contains "$FAULTY_PKCS11_LOG" "non-sensitive-key" "no non-sensitive key made on $PROFILE"
expect_rc 0 get a
cmp -s "$T/out" "$T/plain" || fail "get a after rewrap ($PROFILE)"
ca_and_nonce

# ---- private: a token that makes private secret keys only (the aes-kwp data-key template falls back) ----
PROFILE=private
export FAULTY_PKCS11_PROFILE=$PROFILE
echo "# profile $PROFILE"
rm -rf "$B"
expect_rc 0 kek generate --uri "$(uri private-kwp)" --mechanism aes-kwp
kek_config private-kwp aes-kwp
: >"$FAULTY_PKCS11_LOG"
expect_rc 0 -v put a "$T/plain"
assert_contains "$T/err" "tried again leaving CKA_PRIVATE to the token" "the template fallback is logged (wrap)"
ns_fault_fired "profile private: public-secret-key"
: >"$FAULTY_PKCS11_LOG"
expect_rc 0 -v get a
cmp -s "$T/out" "$T/plain" || fail "get a: wrong plaintext ($PROFILE)"
ns_fault_fired "profile private: public-secret-key"
echo "ok"
