#!/usr/bin/env bash
# Covers: aes-gcm/aes-kwp/rsa-oaep token KEKs from kek generate and pkcs11-tool, module and p11-kit proxy, load checks.
#
# In detail: put/get/verify with each key as the primary KEK and the envelope header it writes (mech byte, OAEP
# hash byte, wrapped-DEK length); `kek list` (id, mechanism, "reachable", no warning); one ring holding all
# six keys reads every blob and verify counts each id; kek generate on an existing label (7, nothing
# created) and with pin-value in --uri (2, nothing created); a non-sensitive pkcs11-tool key and an AES-128
# key refused at load (5, clear message); a key of the wrong class for the mechanism (5); the p11-kit proxy
# (URI without module-path) for put/get; rsa-oaep with oaep_hash sha256 on SoftHSM (SHA-1 OAEP only) fails
# at start with exit 5 naming RSA-OAEP, while oaep_hash sha1 works; oaep_hash with an AES mechanism (2).
#
# pkcs11-tool (OpenSC 0.23.0) on SoftHSM 2.6.1, measured with C_GetAttributeValue: `--keygen --key-type AES:32
# --sensitive` gives CKA_TOKEN, CKA_SENSITIVE, CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP, CKA_UNWRAP, CKA_SIGN, CKA_VERIFY
# true and CKA_EXTRACTABLE, CKA_PRIVATE, CKA_DERIVE false; without --sensitive only CKA_SENSITIVE changes
# (false); --usage-decrypt or --usage-wrap change nothing. `--keypairgen --key-type rsa:3072` gives a private
# key with CKA_PRIVATE, CKA_SENSITIVE, CKA_DECRYPT, CKA_UNWRAP, CKA_SIGN true and CKA_EXTRACTABLE false. So no
# --usage-* flag is needed for any mechanism (the "Usage:"/"Access:" lines are checked below).
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

PIN="mech-pin-4711"
ns_token mech "$PIN"
BUCKET=$T/bucket
SECRETS=$BUCKET/cluster/secret

# uri LABEL [proxy]: the URI of key LABEL on token "mech" (through the module, or the p11-kit proxy).
uri() {
    if [ "${2:-}" = proxy ]; then
        printf 'pkcs11:token=mech;object=%s?pin-source=file:%s' "$1" "$T/pin-mech"
    else
        printf 'pkcs11:token=mech;object=%s?module-path=%s&pin-source=file:%s' "$1" "$SOFTHSM_MODULE" "$T/pin-mech"
    fi
}

# config_one LABEL MECH [EXTRA] [proxy]: config with that token key as the only KEK (bucket: $KEY_BUCKET if
# set, else $BUCKET).
config_one() {
    ns_config <<EOF
cluster_id: mech
storage: {backend: file, path: ${KEY_BUCKET:-$BUCKET}}
encryption_key: {source: pkcs11, uri: "$(uri "$1" "${4:-}")", mechanism: $2${3:-}}
EOF
}

# kek_list_id MECH: run kek list (expecting exit 0) and print the primary's id after checking its row.
kek_list_row_id() {
    local mech=$1
    expect_rc 0 kek list
    if ! awk -v m="$mech" '$1 == "primary" && length($2) == 32 && $2 ~ /^[0-9a-f]+$/ && $3 == m &&
        $4 == "reachable" { ok = 1 } END { exit !ok }' "$T/out"; then
        cat "$T/out" >&2
        fail "kek list: no 'primary <id> $mech reachable' row"
    fi
    assert_not_contains "$T/out" "warning:" "kek list: a warning for a sensitive, non-extractable key"
    assert_not_contains "$T/out" "error:" "kek list: an error for a reachable key"
    awk '$1 == "primary" { print $2 }' "$T/out" >"$T/kek-id"
}

# header_field BLOB: print "mech param W" of an envelope file (bytes 5, 6 and the u16 at 24).
header_fields() {
    python3 -c '
import sys
b = open(sys.argv[1], "rb").read()
print(b[5], b[6], int.from_bytes(b[24:26], "big"))' "$1"
}

declare -A MECH_BYTE=([aes-gcm]=1 [aes-kwp]=2 [rsa-oaep]=3)
# OAEP hash byte: SoftHSM decrypts OAEP with SHA-1 only, so "auto" must pick SHA-1 (1).
declare -A PARAM_BYTE=([aes-gcm]=0 [aes-kwp]=0 [rsa-oaep]=1)
# wrapped DEK: GCM nonce+DEK+tag 60; RFC 5649 KWP of 32 bytes 40; RSA-3072 384.
declare -A WRAPPED_LEN=([aes-gcm]=60 [aes-kwp]=40 [rsa-oaep]=384)
declare -A IDS=()
n=0

for mech in aes-gcm aes-kwp rsa-oaep; do
    # --- a key made by kek generate ---
    gen=gen-$mech
    expect_rc 0 kek generate --uri "$(uri "$gen")" --mechanism "$mech"
    if ! grep -Eq "^generated $mech key, id [0-9a-f]{32}\$" "$T/out"; then
        cat "$T/out" >&2
        fail "kek generate $mech: unexpected output"
    fi
    gen_id=$(sed -n "s/^generated $mech key, id \\([0-9a-f]*\\)\$/\\1/p" "$T/out")

    # --- a key made by pkcs11-tool, with its defaults ---
    tool=tool-$mech
    if [ "$mech" = rsa-oaep ]; then
        ns_p11 mech "$PIN" --keypairgen --key-type rsa:3072 --label "$tool" || fail "pkcs11-tool --keypairgen"
        assert_contains "$T/p11.out" "Usage:      decrypt, sign, unwrap" "pkcs11-tool RSA private key usage"
    else
        ns_p11 mech "$PIN" --keygen --key-type AES:32 --sensitive --label "$tool" || fail "pkcs11-tool --keygen"
        assert_contains "$T/p11.out" "Usage:      encrypt, decrypt, verify, wrap, unwrap" "pkcs11-tool AES key usage"
    fi
    assert_contains "$T/p11.out" "Access:     sensitive, always sensitive, never extractable, local" \
        "pkcs11-tool key access flags"

    for label in "$gen" "$tool"; do
        # each key first gets a bucket of its own, so that verify sees only its blobs
        KEY_BUCKET=$T/bucket-$label
        config_one "$label" "$mech"
        kek_list_row_id "$mech"
        id=$(cat "$T/kek-id")
        if [ "$label" = "$gen" ]; then
            assert_eq "$id" "$gen_id" "kek list id == the id kek generate printed ($mech)"
        fi
        for other in "${!IDS[@]}"; do
            [ "${IDS[$other]}" != "$id" ] || fail "$label has the same KEK id as $other"
        done
        IDS[$label]=$id

        name=$mech/$label
        head -c $((1000 + n * 37)) /dev/urandom >"$T/plain-$label"
        n=$((n + 1))
        expect_rc 0 put "$name" "$T/plain-$label"
        expect_rc 0 get "$name"
        cmp "$T/out" "$T/plain-$label" || fail "get $name: content differs"
        assert_eq "$(header_fields "$KEY_BUCKET/cluster/secret/$name")" \
            "${MECH_BYTE[$mech]} ${PARAM_BYTE[$mech]} ${WRAPPED_LEN[$mech]}" \
            "envelope header (mech, param, wrapped length) of $name"
        assert_eq "$(od -An -tx1 -j8 -N16 "$KEY_BUCKET/cluster/secret/$name" | tr -d ' \n')" "$id" \
            "envelope KEK id of $name"
        # a second put of the same content gives a different blob (fresh DEK and nonces)
        cp "$KEY_BUCKET/cluster/secret/$name" "$T/blob1"
        expect_rc 0 put "$name" "$T/plain-$label"
        if cmp -s "$T/blob1" "$KEY_BUCKET/cluster/secret/$name"; then
            fail "two puts of $name gave identical blobs"
        fi
        expect_rc 0 get "$name"
        cmp "$T/out" "$T/plain-$label" || fail "get $name (second put): content differs"
        expect_rc 0 verify
        assert_contains "$T/out" "kek $id (primary): 1" "verify counts $name under its key"
        assert_contains "$T/out" "verified 1 blobs: 1 ok, 0 failed" "verify summary for $name"
        # gather every blob in one bucket for the next part
        mkdir -p "$BUCKET"
        cp -R "$KEY_BUCKET/cluster" "$BUCKET/"
        unset KEY_BUCKET
    done
done
[ "$(find "$SECRETS" -type f | wc -l)" = 6 ] || fail "test setup: expected six blobs in $SECRETS"

# ---- one ring with all six keys reads every blob ----
ns_config <<EOF
cluster_id: mech
storage: {backend: file, path: $BUCKET}
encryption_key: {source: pkcs11, uri: "$(uri gen-aes-gcm)", mechanism: aes-gcm}
old_encryption_keys:
  - {source: pkcs11, uri: "$(uri tool-aes-gcm)", mechanism: aes-gcm}
  - {source: pkcs11, uri: "$(uri gen-aes-kwp)", mechanism: aes-kwp}
  - {source: pkcs11, uri: "$(uri tool-aes-kwp)", mechanism: aes-kwp}
  - {source: pkcs11, uri: "$(uri gen-rsa-oaep)", mechanism: rsa-oaep}
  - {source: pkcs11, uri: "$(uri tool-rsa-oaep)", mechanism: rsa-oaep, oaep_hash: sha1}
EOF
expect_rc 0 kek list
assert_eq "$(grep -c ' reachable ' "$T/out")" 6 "kek list: six reachable keys"
for label in "${!IDS[@]}"; do
    assert_contains "$T/out" "${IDS[$label]}" "kek list shows the id of $label"
done
for mech in aes-gcm aes-kwp rsa-oaep; do
    for label in "gen-$mech" "tool-$mech"; do
        expect_rc 0 get "$mech/$label"
        cmp "$T/out" "$T/plain-$label" || fail "get $mech/$label from the full ring: content differs"
    done
done
expect_rc 0 verify
assert_contains "$T/out" "kek ${IDS[gen-aes-gcm]} (primary): 1" "verify: gen-aes-gcm count"
for label in tool-aes-gcm gen-aes-kwp tool-aes-kwp gen-rsa-oaep tool-rsa-oaep; do
    assert_contains "$T/out" "kek ${IDS[$label]} (old): 1" "verify: $label count"
done
assert_contains "$T/out" "verified 6 blobs: 6 ok, 0 failed" "verify summary over the full ring"

# ---- kek generate on an existing label: 7, nothing created ----
count_label() {
    ns_p11 mech "$PIN" --list-objects || fail "pkcs11-tool --list-objects"
    grep -c "label:      $1\$" "$T/p11.out" || true
}
assert_eq "$(count_label gen-aes-gcm)" 1 "objects labelled gen-aes-gcm before"
expect_rc 7 kek generate --uri "$(uri gen-aes-gcm)" --mechanism aes-gcm
assert_contains "$T/err" "already" "kek generate on an existing label says so"
expect_rc 7 kek generate --uri "$(uri gen-aes-gcm)" --mechanism aes-kwp
assert_eq "$(count_label gen-aes-gcm)" 1 "kek generate on an existing label created an object"
expect_rc 7 kek generate --uri "$(uri tool-rsa-oaep)" --mechanism rsa-oaep
assert_eq "$(count_label tool-rsa-oaep)" 2 "kek generate on an existing RSA label created an object"
expect_rc 7 kek generate --uri "$(uri tool-aes-kwp)" --mechanism aes-gcm
assert_eq "$(count_label tool-aes-kwp)" 1 "kek generate on a pkcs11-tool label created an object"

# ---- kek generate with pin-value in --uri: 2, nothing created ----
expect_rc 2 kek generate --uri "pkcs11:token=mech;object=pv-key?module-path=$SOFTHSM_MODULE&pin-value=$PIN" \
    --mechanism aes-gcm
assert_contains "$T/err" "pin-value" "kek generate names the refused pin-value"
assert_not_contains "$T/err" "$PIN" "kek generate echoes the PIN"
assert_eq "$(count_label pv-key)" 0 "kek generate with pin-value created a key"

# ---- a key that is not sensitive is refused at load ----
ns_p11 mech "$PIN" --keygen --key-type AES:32 --label plain-aes || fail "pkcs11-tool --keygen (no --sensitive)"
assert_contains "$T/p11.out" "Access:     never extractable, local" \
    "pkcs11-tool without --sensitive makes a non-sensitive key"
assert_not_contains "$T/p11.out" "Access:     sensitive" "pkcs11-tool without --sensitive"
for mech in aes-gcm aes-kwp; do
    config_one plain-aes "$mech"
    expect_rc 5 put plain/x "$T/plain-gen-aes-gcm"
    assert_contains "$T/err" "is not sensitive" "a non-sensitive key is refused with a clear message ($mech)"
    assert_contains "$T/err" "plain-aes" "the refusal names the key"
    [ ! -e "$SECRETS/plain/x" ] || fail "put with a non-sensitive key stored a blob"
    expect_rc 5 get aes-gcm/gen-aes-gcm
    expect_rc 5 kek list
    assert_contains "$T/out" "unreachable" "kek list: a non-sensitive key is unreachable"
done

# ---- an AES-128 key is refused ----
ns_p11 mech "$PIN" --keygen --key-type AES:16 --sensitive --label aes128 || fail "pkcs11-tool --keygen AES:16"
config_one aes128 aes-gcm
expect_rc 5 put x "$T/plain-gen-aes-gcm"
assert_contains "$T/err" "AES-256" "an AES-128 key is refused, naming the needed size"

# ---- a key of the wrong class for the mechanism ----
config_one gen-aes-gcm rsa-oaep
expect_rc 5 put x "$T/plain-gen-aes-gcm"
assert_contains "$T/err" "private-key" "rsa-oaep on an AES key: no private-key object"
config_one gen-rsa-oaep aes-kwp
expect_rc 5 put x "$T/plain-gen-aes-gcm"
assert_contains "$T/err" "secret-key" "aes-kwp on an RSA key: no secret-key object"
[ ! -e "$SECRETS/x" ] || fail "a refused key stored a blob"

# ---- the p11-kit proxy (URI without module-path) ----
for mech in aes-gcm aes-kwp rsa-oaep; do
    config_one "gen-$mech" "$mech" "" proxy
    grep -q module-path "$T/config.yaml" && fail "test setup: proxy URI has a module-path"
    head -c 777 /dev/urandom >"$T/plain-proxy-$mech"
    expect_rc 0 put "proxy/$mech" "$T/plain-proxy-$mech"
    expect_rc 0 get "proxy/$mech"
    cmp "$T/out" "$T/plain-proxy-$mech" || fail "get proxy/$mech: content differs"
    # the blob written through the proxy is under the same KEK id as through the module
    assert_eq "$(od -An -tx1 -j8 -N16 "$SECRETS/proxy/$mech" | tr -d ' \n')" "${IDS[gen-$mech]}" \
        "KEK id through the p11-kit proxy"
    # and reads through the module path too
    config_one "gen-$mech" "$mech"
    expect_rc 0 get "proxy/$mech"
    cmp "$T/out" "$T/plain-proxy-$mech" || fail "get proxy/$mech via module-path: content differs"
done

# ---- rsa-oaep OAEP hash on SoftHSM (SHA-1 only) ----
config_one tool-rsa-oaep rsa-oaep ", oaep_hash: sha256"
expect_rc 5 put oaep/x "$T/plain-gen-aes-gcm"
assert_contains "$T/err" "RSA-OAEP" "oaep_hash sha256 on SoftHSM: the message names the mechanism"
assert_contains "$T/err" "SHA-256" "oaep_hash sha256 on SoftHSM: the message names the hash"
[ ! -e "$SECRETS/oaep/x" ] || fail "oaep_hash sha256 stored a blob"
expect_rc 5 kek list
assert_contains "$T/out" "unreachable" "kek list: rsa-oaep with sha256 on SoftHSM is unreachable"
config_one tool-rsa-oaep rsa-oaep ", oaep_hash: sha1"
expect_rc 0 put oaep/sha1 "$T/plain-gen-aes-gcm"
assert_eq "$(header_fields "$SECRETS/oaep/sha1")" "3 1 384" "oaep_hash sha1 header"
expect_rc 0 get oaep/sha1
cmp "$T/out" "$T/plain-gen-aes-gcm" || fail "get oaep/sha1: content differs"
config_one tool-rsa-oaep rsa-oaep ", oaep_hash: auto"
expect_rc 0 get oaep/sha1
config_one tool-rsa-oaep rsa-oaep ", oaep_hash: md5"
expect_rc 2 get oaep/sha1
config_one gen-aes-gcm aes-gcm ", oaep_hash: sha1"
expect_rc 2 get aes-gcm/gen-aes-gcm
assert_contains "$T/err" "oaep_hash" "oaep_hash with aes-gcm: the message names the key"
config_one gen-aes-gcm des3
expect_rc 2 get aes-gcm/gen-aes-gcm
echo "# PASS cli-mechanisms"
