#!/usr/bin/env bash
# Covers: bad input to the secret commands: unknown type/format and wrong format for the type (2), bad --bytes (2), corrupt/encrypted/mistyped/empty imports and bad names (8, nothing stored), put blobs and missing names, PEM keys imported as opaque.
#
# In detail (SoftHSM token KEK, aes-gcm): unknown --type (2, the message lists the types); unknown export
# format (2); raw on a key pair, pem/pem-bundle/public-pem-bundle/jwks on random and opaque (2); --bytes 0, 4097,
# abc, 12x, -1 and "" (2); import files that are a truncated PEM, random bytes under a "BEGIN PRIVATE KEY"
# header, an encrypted PEM (`openssl genpkey -aes256`), random bytes, a key of another type, an RSA-1024 key,
# for key-pair types and as opaque (8); an empty opaque file (8) and one of 64 KiB + 1 (8; 64 KiB is
# accepted); a missing --from file (3); a 600-character name and names with bad segments (8) for create,
# show, rotate, export; after every refusal the bucket's file list is unchanged. `secret show`/`export`/
# `rotate` of a `put` blob exit non-zero saying it is not a secret document and leave the blob as it was;
# show/export/rotate/promote/retire of a missing name exit 3. A PEM private key (PKCS#8 P-384, traditional EC
# P-256, Ed25519) created with --type opaque becomes a secret of that key's type (show, export pem with the
# same public key); non-PEM bytes stay opaque. Usage errors of `secret` itself exit 2. Last (each in a
# subshell so that all are reported): an empty --from file is bad input (8) for every type, for create and
# rotate, never taken as "no --from" (a generated key); a JSON credentials file holding a PEM key as an escaped
# string (GCP service-account key) is stored as opaque byte for byte.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

PIN="sec-input-1618"
ns_token si "$PIN"
URI="pkcs11:token=si;object=kek-si?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-si"
BUCKET=$T/bucket
SECRETS=$BUCKET/cluster/secret
ns_config <<EOF
cluster_id: secrets-input
storage: {backend: file, path: $BUCKET}
encryption_key: {source: pkcs11, uri: "$URI", mechanism: aes-gcm}
EOF
expect_rc 0 kek generate --uri "$URI" --mechanism aes-gcm

bucket_files() {
    if [ -d "$BUCKET" ]; then
        (cd "$BUCKET" && find . -type f | LC_ALL=C sort)
    fi
}
spki_fp() {
    printf 'SHA256:%s' "$(openssl pkey -in "$1" -pubout -outform DER | openssl dgst -sha256 -binary | base64 -w0 |
        tr -d '=')"
}
# refused CODE MESSAGE ARGS...: exit CODE, stderr contains MESSAGE, nothing printed, the bucket unchanged.
refused() {
    local code=$1 msg=$2 before
    shift 2
    before=$(bucket_files; find "$BUCKET" -type f -exec md5sum {} + 2>/dev/null | LC_ALL=C sort)
    expect_rc "$code" "$@"
    assert_contains "$T/err" "$msg" "nstance-secrets $*: the message"
    [ ! -s "$T/out" ] || fail "nstance-secrets $*: a refusal printed to stdout"
    assert_eq "$(bucket_files; find "$BUCKET" -type f -exec md5sum {} + 2>/dev/null | LC_ALL=C sort)" "$before" \
        "nstance-secrets $*: the bucket changed"
}

expect_rc 0 secret create kp --type ecdsa-p256
expect_rc 0 secret create rnd --type random
printf 'opaque bytes\n' >"$T/opaque.in"
expect_rc 0 secret create opq --type opaque --from "$T/opaque.in"

# ---- unknown type, unknown or unfitting export format: usage (2) ----
refused 2 "unknown type 'ed448'" secret create new --type ed448
assert_contains "$T/err" "ed25519, ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096, random, opaque" \
    "unknown type: the message lists the types"
refused 2 "unknown type" secret create new --type ECDSA-P256
refused 2 "unknown type" secret create new --type ""
refused 2 "unknown export format 'der'" secret export kp --format der
refused 2 "unknown export format" secret export rnd --format PEM
refused 2 "raw is for random and opaque" secret export kp --format raw
for f in pem pem-bundle public-pem-bundle jwks; do
    refused 2 "$f is for key pairs" secret export rnd --format "$f"
    refused 2 "$f is for key pairs" secret export opq --format "$f"
done
rm -f "$T/exp.out"
refused 2 "raw is for random and opaque" secret export kp --format raw -o "$T/exp.out"
[ ! -e "$T/exp.out" ] || fail "a refused export created its -o file"

# ---- --bytes out of range or not a number: usage (2) ----
for b in 0 4097 abc 12x -1 "" 99999999999999999999; do
    refused 2 "--bytes must be 1..4096" secret create new --type random --bytes "$b"
done

# ---- usage errors of `secret` itself ----
refused 2 "usage:" secret
refused 2 "usage:" secret frobnicate
refused 2 "usage:" secret create new
refused 2 "usage:" secret create --type random
refused 2 "usage:" secret create a b --type random
refused 2 "usage:" secret show
refused 2 "usage:" secret show a b
refused 2 "usage:" secret export kp
refused 2 "usage:" secret rotate
refused 2 "usage:" secret rotate kp --bogus
refused 2 "usage:" secret list extra

# ---- corrupt, encrypted and mistyped imports: bad input (8), nothing stored ----
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/p256.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$T/p384.pem" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$T/ed.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$T/rsa1024.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes256 -pass pass:x -out "$T/enc.pem" 2>/dev/null
assert_contains "$T/enc.pem" "BEGIN ENCRYPTED PRIVATE KEY" "test setup: an encrypted PEM"
head -c $(($(stat -c %s "$T/p256.pem") / 2)) "$T/p256.pem" >"$T/truncated.pem"
{
    echo "-----BEGIN PRIVATE KEY-----"
    head -c 120 /dev/urandom | base64
    echo "-----END PRIVATE KEY-----"
} >"$T/junk.pem"
head -c 300 /dev/urandom >"$T/random.bin"
: >"$T/empty"

for f in truncated junk enc; do
    refused 8 "" secret create new --type ecdsa-p256 --from "$T/$f.pem"
    [ ! -e "$SECRETS/new" ] || fail "a corrupt import ($f) stored a secret"
    refused 8 "" secret create new --type opaque --from "$T/$f.pem"
    refused 8 "" secret rotate kp --from "$T/$f.pem"
done
assert_contains "$T/err" "encrypted" "an encrypted PEM: the message says so"
refused 8 "" secret create new --type ecdsa-p256 --from "$T/random.bin"
refused 8 "ecdsa-p384" secret create new --type ecdsa-p256 --from "$T/p384.pem"
refused 8 "ed25519" secret create new --type ecdsa-p256 --from "$T/ed.pem"
refused 8 "ecdsa-p256" secret create new --type rsa-2048 --from "$T/p256.pem"
refused 8 "unsupported key" secret create new --type rsa-2048 --from "$T/rsa1024.pem"
refused 8 "unsupported key" secret create new --type opaque --from "$T/rsa1024.pem"
refused 8 "" secret create new --type random --from "$T/random.bin"

# opaque: 1 byte to 64 KiB (an empty file: at the end)
head -c 65537 /dev/urandom >"$T/big.bin"
refused 8 "larger than" secret create new --type opaque --from "$T/big.bin"
head -c 65536 "$T/big.bin" >"$T/max.bin"
expect_rc 0 secret create opq-max --type opaque --from "$T/max.bin"
expect_rc 0 secret export opq-max --format raw
cmp "$T/out" "$T/max.bin" || fail "a 64 KiB opaque secret: raw differs"
refused 3 "" secret create new --type opaque --from "$T/no-such-file"

# ---- names: over-long and bad segments (8), nothing stored ----
long=$(printf 'n%.0s' $(seq 1 600))
for name in "$long" "a/../b" "../x" ".hidden" "a//b" "a/" "/abs" "sp ace" "a/.b"; do
    refused 8 "invalid name" secret create "$name" --type random
    refused 8 "invalid name" secret create "$name" --type opaque --from "$T/opaque.in"
    refused 8 "invalid name" secret show "$name"
    refused 8 "invalid name" secret rotate "$name"
    refused 8 "invalid name" secret export "$name" --format raw
done
[ ! -e "$BUCKET/cluster/x" ] || fail "secret create ../x wrote outside cluster/secret"
# 128-character segments are the limit
seg=$(printf 's%.0s' $(seq 1 128))
expect_rc 0 secret create "$seg/ok" --type random
refused 8 "invalid name" secret create "${seg}x/ok" --type random

# ---- a put blob is not a secret document ----
expect_rc 0 put plain <<<'just some bytes'
expect_rc 0 put plain-json <<<'{"format": "something-else"}'
for b in plain plain-json; do
    cp "$SECRETS/$b" "$T/blob.before"
    for cmd in "show $b" "export $b --format raw" "export $b --format pem" "rotate $b" "promote $b" "retire $b"; do
        # shellcheck disable=SC2086
        # Bad input (8, doc/cli.md "Exit codes"): not any non-zero status, which a crash would give too.
        expect_rc 8 secret $cmd
        case $cmd in
        promote* | retire*) ;; # (these report "malformed or truncated data"; the message is not pinned)
        *) assert_contains "$T/err" "is not a secret document" "secret $cmd of a put blob: the message" ;;
        esac
        [ ! -s "$T/out" ] || fail "secret $cmd of a put blob printed to stdout"
        cmp -s "$SECRETS/$b" "$T/blob.before" || fail "secret $cmd changed the put blob"
    done
    expect_rc 0 get "$b"
done

# ---- missing names: not found (3) ----
refused 3 "not found" secret show nosuch
refused 3 "not found" secret export nosuch --format pem
refused 3 "not found" secret rotate nosuch
refused 3 "not found" secret promote nosuch
refused 3 "not found" secret retire nosuch
refused 3 "not found" secret show tenants/nosuch/key

# ---- a PEM private key imported as opaque takes the key's type ----
openssl ec -in "$T/p256.pem" -out "$T/p256-trad.pem" 2>/dev/null
assert_contains "$T/p256-trad.pem" "BEGIN EC PRIVATE KEY" "test setup: a traditional EC PEM"
for spec in "p384 ecdsa-p384" "p256-trad ecdsa-p256" "ed ed25519"; do
    read -r f type <<<"$spec"
    expect_rc 0 secret create "typed/$f" --type opaque --from "$T/$f.pem"
    assert_contains "$T/out" "($type)" "opaque import of $f.pem: created as $type"
    assert_contains "$T/err" "$type private key" "opaque import of $f.pem: the note names the type"
    expect_rc 0 secret show "typed/$f"
    assert_contains "$T/out" "type: $type" "opaque import of $f.pem: show gives the key's type"
    assert_not_contains "$T/out" "type: opaque" "opaque import of $f.pem: not opaque"
    fp=$(awk '$1 == "0" { print $5 }' "$T/out")
    assert_eq "$fp" "$(spki_fp "$T/$f.pem")" "opaque import of $f.pem: show's fingerprint is that key's"
    expect_rc 0 secret export "typed/$f" --format pem
    assert_eq "$(spki_fp "$T/out")" "$(spki_fp "$T/$f.pem")" "opaque import of $f.pem: pem is that key"
    refused 2 "raw is for random and opaque" secret export "typed/$f" --format raw
done
# bytes that are not a PEM key stay opaque, byte for byte
expect_rc 0 secret create typed/bin --type opaque --from "$T/random.bin"
expect_rc 0 secret show typed/bin
assert_contains "$T/out" "type: opaque" "non-PEM bytes stay opaque"
expect_rc 0 secret export typed/bin --format raw
cmp "$T/out" "$T/random.bin" || fail "opaque raw differs from the imported bytes"
# ---- last: cases each run in a subshell, so that one failing does not hide the others ----
LATE_FAIL=0
# an empty --from file is bad input (8), never "no file": no key may be generated in its place
(refused 8 "" secret create empty/opaque --type opaque --from "$T/empty") || LATE_FAIL=1
(refused 8 "" secret create empty/ed25519 --type ed25519 --from "$T/empty") || LATE_FAIL=1
(refused 8 "" secret create empty/random --type random --from "$T/empty") || LATE_FAIL=1
(refused 8 "" secret rotate kp --from "$T/empty") || LATE_FAIL=1
(refused 8 "" secret rotate rnd --from "$T/empty") || LATE_FAIL=1
# a JSON credentials file that holds a PEM key as a string (a GCP service-account key) is not a PEM file:
# as opaque it is stored byte for byte
(
    python3 -c 'import json, sys; print(json.dumps({"type": "service_account", "project_id": "p",
        "private_key": open(sys.argv[1]).read(), "client_email": "sa@p.iam.gserviceaccount.com"}, indent=2))' \
        "$T/p256.pem" >"$T/sa.json"
    assert_contains "$T/sa.json" '"private_key": "-----BEGIN PRIVATE KEY-----\n' "test setup: an escaped PEM"
    expect_rc 0 secret create creds/sa.json --type opaque --from "$T/sa.json"
    expect_rc 0 secret show creds/sa.json
    assert_contains "$T/out" "type: opaque" "a JSON file with an embedded PEM stays opaque"
    expect_rc 0 secret export creds/sa.json --format raw
    cmp "$T/out" "$T/sa.json" || fail "the JSON credentials are not stored byte for byte"
) || LATE_FAIL=1
[ "$LATE_FAIL" = 0 ] || fail "some of the last cases failed (above)"
echo "# PASS secrets-input"
