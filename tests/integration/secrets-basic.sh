#!/usr/bin/env bash
# Covers: secret create/show/list of every type, every export format (order, RFC 7638 kids, raw bytes, -o 0600), no private material in show or the bucket.
#
# In detail (SoftHSM token KEK, aes-gcm): `secret create` of each of the 8 types prints the key id (43-char
# thumbprint for key pairs, 22-char random id otherwise); `secret show` gives the type, one current key with
# that id, a created-at within a minute of now and, for key pairs, the SHA256 fingerprint of the public key as
# computed with openssl; `secret list` names every secret with its type and key count, and `(blob)` for a `put`
# object. Each key-pair type is rotated twice (3 keys): pem-bundle has 3 PKCS#8 blocks that each parse with
# `openssl pkey`, newest first (each block's public key equals the public-pem-bundle block at that position and
# its RFC 7638 thumbprint, recomputed in python, is the id `secret show` lists there); pem is exactly the first
# block; jwks has the right kty/crv/alg/use, kids equal to the shown ids in order and each kid equal to the
# thumbprint recomputed from its own JWK members. raw of random is --bytes long (default 32; 1 and 4096) and
# changes on rotate; raw of opaque is the imported file byte for byte. export -o writes 0600 (umask 000) with the
# same bytes as stdout. `secret show` never prints private material (PKCS#8 base64 lines, raw bytes as hex or
# base64), and no bucket file holds the plaintext document ("nstance-secret", "pkcs8", key base64).
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need python3
ns_need_py cryptography

PIN="sec-basic-4711"
ns_token sb "$PIN"
URI="pkcs11:token=sb;object=kek-sb?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-sb"
BUCKET=$T/bucket
SECRETS=$BUCKET/cluster/secret
ns_config <<EOF
cluster_id: secrets-basic
storage: {backend: file, path: $BUCKET}
encryption_key: {source: pkcs11, uri: "$URI", mechanism: aes-gcm}
EOF
expect_rc 0 kek generate --uri "$URI" --mechanism aes-gcm

# jose.py: an independent RFC 7638 implementation (python3-cryptography).
#   jose.py thumb PEM         the thumbprint of the (public or private) key in PEM
#   jose.py jwks FILE TYPE ID...  check a JWKS against the type and the ids, in order
cat >"$T/jose.py" <<'PY'
import base64, hashlib, json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def ub64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

def load(path):
    data = open(path, "rb").read()
    if b"PRIVATE KEY" in data:
        return serialization.load_pem_private_key(data, None).public_key()
    return serialization.load_pem_public_key(data)

def jwk(pub):
    if isinstance(pub, ed25519.Ed25519PublicKey):
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64u(raw)}
    if isinstance(pub, ec.EllipticCurvePublicKey):
        size = (pub.curve.key_size + 7) // 8
        n = pub.public_numbers()
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[pub.curve.name]
        return {"crv": crv, "kty": "EC", "x": b64u(n.x.to_bytes(size, "big")), "y": b64u(n.y.to_bytes(size, "big"))}
    n = pub.public_numbers()
    return {"e": b64u(n.e.to_bytes((n.e.bit_length() + 7) // 8, "big")), "kty": "RSA",
            "n": b64u(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big"))}

REQUIRED = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}

def thumb(j):
    canon = "{" + ",".join('"%s":"%s"' % (k, j[k]) for k in REQUIRED[j["kty"]]) + "}"
    return b64u(hashlib.sha256(canon.encode()).digest())

WANT = {"ed25519": ("OKP", "Ed25519", "EdDSA", None), "ecdsa-p256": ("EC", "P-256", "ES256", None),
        "ecdsa-p384": ("EC", "P-384", "ES384", None), "rsa-2048": ("RSA", None, "RS256", 2048),
        "rsa-3072": ("RSA", None, "RS256", 3072), "rsa-4096": ("RSA", None, "RS256", 4096)}

def die(msg):
    sys.stderr.write("jose.py: " + msg + "\n")
    sys.exit(1)

if sys.argv[1] == "thumb":
    print(thumb(jwk(load(sys.argv[2]))))
elif sys.argv[1] == "jwks":
    def no_dup(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            die("duplicate member")
        return dict(pairs)
    doc = json.load(open(sys.argv[2]), object_pairs_hook=no_dup)
    kty, crv, alg, bits = WANT[sys.argv[3]]
    ids = sys.argv[4:]
    if list(doc) != ["keys"]:
        die("members %s" % list(doc))
    if [k.get("kid") for k in doc["keys"]] != ids:
        die("kids %s, want %s" % ([k.get("kid") for k in doc["keys"]], ids))
    for k in doc["keys"]:
        want_members = set(REQUIRED[kty]) | {"kid", "alg", "use"}
        if set(k) != want_members:
            die("members %s, want %s" % (sorted(k), sorted(want_members)))
        if k["kty"] != kty or k.get("crv") != crv or k["alg"] != alg or k["use"] != "sig":
            die("kty/crv/alg/use %s %s %s %s" % (k["kty"], k.get("crv"), k["alg"], k["use"]))
        if bits is not None and int.from_bytes(ub64u(k["n"]), "big").bit_length() != bits:
            die("RSA modulus is not %d bits" % bits)
        if thumb(k) != k["kid"]:
            die("kid %s is not the thumbprint %s of its JWK" % (k["kid"], thumb(k)))
else:
    die("usage")
PY
thumb() { python3 "$T/jose.py" thumb "$1"; }

# show_ids / show_states: the key ids / states listed by the last `secret show`, one per line.
show_ids() { awk '$1 ~ /^[0-9]+$/ { print $3 }' "$T/out"; }
show_states() { awk '$1 ~ /^[0-9]+$/ { print $1 " " $2 }' "$T/out"; }
# split_pem FILE PREFIX: PREFIX-1.pem, PREFIX-2.pem, ... one PEM block each; prints the number of blocks.
split_pem() {
    rm -f "$2"-*.pem
    awk -v p="$2" '/^-----BEGIN / { n++ } n > 0 { print > (p "-" n ".pem") } END { print n + 0 }' "$1"
}
# spki_fp PEM: "SHA256:" + unpadded base64 of SHA-256 of the SubjectPublicKeyInfo DER, computed with openssl.
spki_fp() {
    printf 'SHA256:%s' "$(openssl pkey -in "$1" -pubout -outform DER | openssl dgst -sha256 -binary | base64 -w0 |
        tr -d '=')"
}

KEYPAIRS="ed25519 ecdsa-p256 ecdsa-p384 rsa-2048 rsa-3072 rsa-4096"
NOW=$(date -u +%s)

# ---- create, show: every type ----
printf '{"AccountTag":"acme","TunnelSecret":"c2VjcmV0\\u0000","TunnelID":"%s"}\n\0\377tail' "$(date +%N)" \
    >"$T/opaque.in"
declare -A ID0
for t in $KEYPAIRS random opaque; do
    case $t in
    opaque) expect_rc 0 secret create "k/$t" --type opaque --from "$T/opaque.in" ;;
    *) expect_rc 0 secret create "k/$t" --type "$t" ;;
    esac
    if ! grep -Eq "^created k/$t \\($t\\), key [A-Za-z0-9_-]+\$" "$T/out"; then
        cat "$T/out" >&2
        fail "secret create k/$t: unexpected output"
    fi
    id=$(sed -n 's/^created .*, key \([A-Za-z0-9_-]*\)$/\1/p' "$T/out")
    case $t in
    random | opaque) assert_eq "${#id}" 22 "k/$t: a random id is 16 bytes base64url" ;;
    *) assert_eq "${#id}" 43 "k/$t: a key-pair id is a SHA-256 thumbprint" ;;
    esac
    ID0[$t]=$id
    [ -f "$SECRETS/k/$t" ] || fail "secret create k/$t stored nothing at $SECRETS/k/$t"
    assert_eq "$(head -c 4 "$SECRETS/k/$t")" "NSEN" "k/$t is stored as an envelope"

    expect_rc 0 secret show "k/$t"
    assert_contains "$T/out" "name: k/$t" "show names the secret"
    assert_contains "$T/out" "type: $t" "show gives the type"
    assert_contains "$T/out" "keys: 1" "show counts one key"
    assert_eq "$(show_states)" "0 current" "k/$t: one current key"
    assert_eq "$(show_ids)" "$id" "k/$t: show lists the created id"
    when=$(awk '$1 == "0" { print $4 }' "$T/out")
    [[ $when =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ ]] || fail "k/$t: created-at '$when'"
    age=$((NOW - $(date -u -d "$when" +%s)))
    if [ "$age" -lt -120 ] || [ "$age" -gt 120 ]; then
        fail "k/$t: created-at $when is not now"
    fi
    fp=$(awk '$1 == "0" { print $5 }' "$T/out")
    case $t in
    random | opaque)
        assert_contains "$T/out" "(no public part)" "k/$t: show has no fingerprint"
        ;;
    *)
        expect_rc 0 secret export "k/$t" --format pem
        cp "$T/out" "$T/k-$t.pem"
        openssl pkey -in "$T/k-$t.pem" -noout || fail "k/$t: exported pem does not parse"
        assert_eq "$fp" "$(spki_fp "$T/k-$t.pem")" "k/$t: show's fingerprint is the SPKI SHA-256"
        assert_eq "$(thumb "$T/k-$t.pem")" "$id" "k/$t: the id is the RFC 7638 thumbprint"
        ;;
    esac
done

# ---- list ----
expect_rc 0 put plain/blob <<<'not a secret document'
expect_rc 0 secret list
assert_eq "$(head -n 1 "$T/out" | awk '{ print $1, $2, $3 }')" "NAME TYPE KEYS" "secret list header"
{
    for t in $KEYPAIRS random opaque; do
        echo "k/$t $t 1"
    done
    echo "plain/blob (blob) -"
} | LC_ALL=C sort >"$T/want-list"
tail -n +2 "$T/out" | awk '{ print $1, $2, $3 }' | LC_ALL=C sort >"$T/got-list"
diff -u "$T/want-list" "$T/got-list" || fail "secret list: unexpected lines"

# ---- two rotations of each key pair: 3 keys, every export format ----
for t in $KEYPAIRS; do
    name=k/$t
    expect_rc 0 secret rotate "$name"
    r1=$(sed -n 's/^rotated .*: new key \([A-Za-z0-9_-]*\)$/\1/p' "$T/out")
    expect_rc 0 secret rotate "$name"
    r2=$(sed -n 's/^rotated .*: new key \([A-Za-z0-9_-]*\)$/\1/p' "$T/out")
    if [ "${#r1}" != 43 ] || [ "${#r2}" != 43 ]; then
        fail "$name: rotate did not print the new key ids"
    fi
    expect_rc 0 secret show "$name"
    assert_contains "$T/out" "keys: 3" "$name: three keys after two rotations"
    assert_eq "$(show_states | tr '\n' ' ')" "0 current 1 previous 2 previous " "$name: states"
    mapfile -t ids < <(show_ids)
    assert_eq "${ids[*]}" "$r2 $r1 ${ID0[$t]}" "$name: show lists the keys newest first"
    mapfile -t fps < <(awk '$1 ~ /^[0-9]+$/ { print $5 }' "$T/out")

    expect_rc 0 secret export "$name" --format pem-bundle
    cp "$T/out" "$T/bundle.pem"
    assert_eq "$(split_pem "$T/bundle.pem" "$T/priv")" 3 "$name: pem-bundle has 3 blocks"
    assert_eq "$(grep -c -- '-----BEGIN PRIVATE KEY-----' "$T/bundle.pem")" 3 "$name: 3 PKCS#8 blocks"
    expect_rc 0 secret export "$name" --format public-pem-bundle
    cp "$T/out" "$T/pubbundle.pem"
    assert_eq "$(split_pem "$T/pubbundle.pem" "$T/pub")" 3 "$name: public-pem-bundle has 3 blocks"
    assert_not_contains "$T/pubbundle.pem" "PRIVATE" "$name: public-pem-bundle holds no private key"
    for i in 1 2 3; do
        openssl pkey -in "$T/priv-$i.pem" -noout || fail "$name: pem-bundle block $i does not parse"
        openssl pkey -in "$T/priv-$i.pem" -pubout -out "$T/priv-$i.pub"
        openssl pkey -pubin -in "$T/pub-$i.pem" -out "$T/pub-$i.norm"
        cmp -s "$T/priv-$i.pub" "$T/pub-$i.norm" ||
            fail "$name: pem-bundle block $i and public-pem-bundle block $i are different keys"
        assert_eq "$(thumb "$T/priv-$i.pem")" "${ids[$((i - 1))]}" "$name: block $i is key $((i - 1)) of show"
        assert_eq "$(spki_fp "$T/priv-$i.pem")" "${fps[$((i - 1))]}" "$name: block $i fingerprint"
    done

    expect_rc 0 secret export "$name" --format pem
    assert_eq "$(grep -c -- '-----BEGIN ' "$T/out")" 1 "$name: pem is one block"
    cmp -s "$T/out" "$T/priv-1.pem" || fail "$name: pem is not the first block of the bundle"

    expect_rc 0 secret export "$name" --format jwks
    cp "$T/out" "$T/jwks.json"
    python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$T/jwks.json" || fail "$name: jwks is not JSON"
    python3 "$T/jose.py" jwks "$T/jwks.json" "$t" "${ids[@]}" || fail "$name: jwks check"

    # no private material in show; none of the key material in the bucket
    expect_rc 0 secret show "$name"
    for i in 1 2 3; do
        while IFS= read -r line; do
            assert_not_contains "$T/out" "$line" "$name: show prints PKCS#8 base64"
            if grep -rqF -- "$line" "$BUCKET"; then
                fail "$name: a bucket file holds PKCS#8 base64 of block $i"
            fi
        done < <(grep -v -- '-----' "$T/priv-$i.pem")
    done
    assert_not_contains "$T/out" "PRIVATE" "$name: show prints a private key"
done

# ---- raw: random and opaque ----
expect_rc 0 secret export k/random --format raw
assert_eq "$(stat -c %s "$T/out")" 32 "random: default 32 bytes"
cp "$T/out" "$T/raw-default"
for n in 1 77 4096; do
    expect_rc 0 secret create "r/$n" --type random --bytes "$n"
    expect_rc 0 secret export "r/$n" --format raw
    assert_eq "$(stat -c %s "$T/out")" "$n" "random --bytes $n: raw length"
done
expect_rc 0 secret export r/77 --format raw
cp "$T/out" "$T/raw-77"
expect_rc 0 secret rotate r/77
expect_rc 0 secret export r/77 --format raw
assert_eq "$(stat -c %s "$T/out")" 77 "random: a rotated key keeps its length"
if cmp -s "$T/out" "$T/raw-77"; then
    fail "random: rotate did not change the raw value"
fi
expect_rc 0 secret export k/opaque --format raw
cmp "$T/out" "$T/opaque.in" || fail "opaque: raw is not the imported file"

# no private material in show (random, opaque)
for f in "$T/raw-77" "$T/raw-default" "$T/opaque.in"; do
    hex=$(od -An -v -tx1 "$f" | tr -d ' \n')
    b64=$(base64 -w0 "$f")
    case $f in
    *raw-77) expect_rc 0 secret show r/77 ;;
    *raw-default) expect_rc 0 secret show k/random ;;
    *) expect_rc 0 secret show k/opaque ;;
    esac
    assert_not_contains "$T/out" "$hex" "show prints the raw bytes as hex"
    assert_not_contains "$T/out" "${hex:0:16}" "show prints part of the raw bytes as hex"
    assert_not_contains "$T/out" "${b64:0:16}" "show prints the raw bytes as base64"
    if grep -rqF -- "${b64:0:24}" "$BUCKET"; then
        fail "a bucket file holds the base64 of $f"
    fi
done
assert_not_contains "$T/out" "AccountTag" "show prints the opaque content"

# ---- export -o FILE: mode 0600, same bytes as stdout ----
umask_saved=$(umask)
for spec in "k/ecdsa-p256 pem-bundle" "k/ed25519 jwks" "k/opaque raw" "r/77 raw"; do
    read -r name fmt <<<"$spec"
    out=$T/exp-${name//\//_}.$fmt
    rm -f "$out"
    umask 000
    expect_rc 0 secret export "$name" --format "$fmt" -o "$out"
    umask "$umask_saved"
    [ ! -s "$T/out" ] || fail "export -o also wrote to stdout"
    assert_file_mode "$out" 600
    expect_rc 0 secret export "$name" --format "$fmt"
    cmp -s "$out" "$T/out" || fail "export $name -o: different bytes than stdout"
done
# an existing world-readable file is replaced by a 0600 one
printf 'old\n' >"$T/exp-old"
chmod 0644 "$T/exp-old"
expect_rc 0 secret export k/opaque --format raw -o "$T/exp-old"
assert_file_mode "$T/exp-old" 600
cmp "$T/exp-old" "$T/opaque.in" || fail "export -o over an existing file: content differs"

# ---- the bucket never holds the plaintext document ----
if grep -rqaF -- "nstance-secret" "$BUCKET"; then
    fail "a bucket file holds the document format string"
fi
if grep -rqaF -- "pkcs8" "$BUCKET"; then
    fail "a bucket file holds a document member name"
fi
if grep -rqaF -- "AccountTag" "$BUCKET"; then
    fail "a bucket file holds the opaque plaintext"
fi
echo "# PASS secrets-basic"
