#!/usr/bin/env bash
# Covers: ca init/issue/bundle/rotate/retire with CA keys Ed25519, P-256 and RSA-3072, in a SoftHSM token and
# in software; certificates checked by openssl verify, GnuTLS certtool --verify and python3-cryptography.
#
# In detail: for each of the six CA key placements, `ca init` makes a CA certificate (v3, random positive serial of
# 16 octets, CA:TRUE critical with path length 1 from the config, keyUsage, SKI = AKI, 10-year validity, subject from
# the config) stored at cluster/ca.crt; `ca issue` from a PEM public key (Ed25519, P-256, RSA-2048) and from a
# PKCS#10 request gives certificates with exactly the CN, the single O (tenant), the role extension (DER
# UTF8String under the configured OID), the EKU, the DNS/IP/URI SANs and the lifetime asked for; each verifies
# against the bundle with openssl and certtool; the certificate log holds one entry per certificate whose serial,
# subject, not-after and issuer key id are the certificate's. Token keys stay in the token (the bucket holds no
# ca.key secret), a second `ca init` is refused (exit 7) and changes nothing. Rotation: leaves of the old CA verify
# against the new bundle, leaves of the new CA verify with only the old root as trust anchor plus the cross-signed
# certificate, issuance uses the new key; retire removes the oldest certificate and its software key. Two
# concurrent `ca init`: exactly one wins, the loser changes nothing.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need python3 openssl certtool
ns_need_py cryptography
CHECK="python3 $top_srcdir/tests/tools/certcheck.py"

PIN="ca-test-2718"
ns_token ca "$PIN"
head -c 32 /dev/urandom >"$T/kek.key"
chmod 0600 "$T/kek.key"

# Leaf keys of every supported kind, and a request.
openssl genpkey -algorithm ed25519 -out "$T/ed.key" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/p256.key" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/rsa.key" 2>/dev/null
for k in ed p256 rsa; do openssl pkey -in "$T/$k.key" -pubout -out "$T/$k.pub"; done
openssl req -new -key "$T/p256.key" -subj "/CN=from-csr/O=ignored" -out "$T/req.csr"

# config PLACE TYPE [EXTRA_KEY_URI]
config() {
    local keys=""
    if [ "$1" = token ]; then
        keys="  keys: [\"pkcs11:token=ca;object=ca-$2?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-ca\"]"
    elif [ -n "${3:-}" ]; then
        keys="  keys: [\"$3\"]"
    fi
    ns_config <<EOF
cluster_id: ca-test
storage: {backend: file, path: $T/bucket-$1-$2}
encryption_key: {source: file, path: $T/kek.key}
shard: s1
ca:
$keys
  subject: {cn: "Test CA $1 $2", o: "Nstance Test", c: NZ, st: Otago, l: Dunedin}
  path_len: 1
  cert_ttl: 2h
EOF
}

# certlog_check BUCKET CERT TENANT CN: exactly one log entry for this certificate, with its real serial.
certlog_check() {
    local bucket=$1 cert=$2 tenant=$3 cn=$4 serial f
    serial=$($CHECK serial "$cert")
    f=$(grep -l "\"serial\":\"$serial\"" "$bucket"/shard/s1/certlog/"$tenant".*."$cn".json) ||
        fail "no certlog entry with serial $serial"
    [ "$(echo "$f" | wc -l)" = 1 ] || fail "serial $serial logged twice"
    python3 - "$f" "$cert" "$serial" <<'PY' || fail "certlog entry $f does not match $cert"
import json, sys, warnings
warnings.simplefilter("ignore")
from cryptography import x509
e = json.load(open(sys.argv[1]))
c = x509.load_pem_x509_certificate(open(sys.argv[2], "rb").read())
assert e["serial"] == sys.argv[3] == "%x" % c.serial_number, e
assert e["not_after"] == c.not_valid_after.strftime("%Y-%m-%dT%H:%M:%SZ"), e
assert e["subject"] == c.subject.rfc4514_string(), (e["subject"], c.subject.rfc4514_string())
assert len(e["issuer_key_id"]) == 43, e
PY
}

SAVED_ASAN_OPTIONS=${ASAN_OPTIONS-}
for place in software token; do
    for type in ed25519 ecdsa-p256 rsa-3072; do
        echo "# CA: $type key in $place"
        # SoftHSM 2.6.1 leaks an ASN.1 object in every EdDSA C_Sign (fixed upstream after 2.6.1). The
        # sanitizer build cannot unwind through libcrypto to see that the allocation is SoftHSM's, so leak
        # checking is off for the commands that sign with a token Ed25519 key only; ASan and UBSan stay on.
        if [ "$place/$type" = token/ed25519 ] && [ -n "$SAVED_ASAN_OPTIONS" ]; then
            export ASAN_OPTIONS="$SAVED_ASAN_OPTIONS:detect_leaks=0"
        elif [ -n "$SAVED_ASAN_OPTIONS" ]; then
            export ASAN_OPTIONS="$SAVED_ASAN_OPTIONS"
        fi
        config "$place" "$type"
        B=$T/bucket-$place-$type
        expect_rc 0 ca init --type "$type"
        assert_contains "$T/out" "($type)"
        id=$(sed -n 's/.*key id \([^ ]*\) .*/\1/p' "$T/out")
        [ "${#id}" = 43 ] || fail "ca init printed no key id"
        expect_rc 7 ca init --type "$type"
        assert_contains "$T/err" "a CA exists already"
        expect_rc 0 ca bundle -o "$T/ca.pem"
        [ "$(grep -c BEGIN "$T/ca.pem")" = 1 ] || fail "bundle should hold one certificate"
        $CHECK ca "$T/ca.pem" --path-len 1 --days 3650 || fail "CA certificate checks"
        openssl x509 -in "$T/ca.pem" -noout -subject |
            grep -q "C = NZ, ST = Otago, L = Dunedin, O = Nstance Test, CN = Test CA $place $type" ||
            fail "CA subject"
        if [ "$place" = token ]; then
            [ ! -e "$B/cluster/secret/ca.key" ] || fail "a token CA key must not be stored as a secret"
        else
            [ -e "$B/cluster/secret/ca.key" ] || fail "software CA key not stored"
            ! grep -q "PRIVATE" "$B/cluster/secret/ca.key" || fail "ca.key stored in the clear"
        fi
        # An Ed25519 agent, a P-256 operator, an RSA server certificate, and one from a request.
        expect_rc 0 ca issue --public-key "$T/ed.pub" --cn vm-1 --tenant acme --role agent \
            --dns vm-1.acme.internal --ip 10.1.2.3 --ip 2001:db8::7 --uri spiffe://ca-test/vm-1 -o "$T/a.pem"
        $CHECK leaf "$T/a.pem" --cn vm-1 --tenant acme --role agent --kind client --dns vm-1.acme.internal \
            --ip 10.1.2.3 --ip 2001:db8::7 --uri spiffe://ca-test/vm-1 --ttl 7200 --issuer "$T/ca.pem" ||
            fail "agent certificate checks"
        expect_rc 0 ca issue --public-key "$T/p256.pub" --cn alice --tenant acme --role operator --ttl 90s \
            -o "$T/o.pem"
        $CHECK leaf "$T/o.pem" --cn alice --tenant acme --role operator --ttl 90 || fail "operator certificate checks"
        expect_rc 0 ca issue --public-key "$T/rsa.pub" --cn api.acme.internal --tenant acme --kind server \
            --dns api.acme.internal --ttl 30d -o "$T/s.pem"
        $CHECK leaf "$T/s.pem" --cn api.acme.internal --tenant acme --kind server --dns api.acme.internal \
            --ttl 2592000 || fail "server certificate checks"
        expect_rc 0 ca issue --csr "$T/req.csr" --tenant beta --role agent -o "$T/c.pem"
        $CHECK leaf "$T/c.pem" --cn from-csr --tenant beta --role agent || fail "certificate from a CSR"
        for c in a o s c; do
            openssl verify -CAfile "$T/ca.pem" "$T/$c.pem" >"$T/verify.out" 2>&1 || {
                cat "$T/verify.out" >&2
                fail "openssl verify $c.pem ($place $type)"
            }
            certtool --verify --load-ca-certificate "$T/ca.pem" --infile "$T/$c.pem" >"$T/certtool.out" 2>&1 || {
                cat "$T/certtool.out" >&2
                fail "certtool --verify $c.pem ($place $type)"
            }
            grep -q "Verified. The certificate is trusted" "$T/certtool.out" || fail "certtool did not trust $c.pem"
        done
        certlog_check "$B" "$T/a.pem" acme vm-1
        certlog_check "$B" "$T/o.pem" acme alice
        certlog_check "$B" "$T/s.pem" acme api.acme.internal
        certlog_check "$B" "$T/c.pem" beta from-csr
        grep -q "\"issuer_key_id\":\"$id\"" "$B"/shard/s1/certlog/acme.*.vm-1.json || fail "issuer key id in the log"
        [ "$(find "$B/shard/s1/certlog" -type f | wc -l)" = 4 ] || fail "four certificates, four log entries"
    done
done

echo "# rotation: software Ed25519 CA -> token P-256 CA -> software Ed25519 again, then retire"
ROT_URI="pkcs11:token=ca;object=ca-rot?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-ca"
config software ed25519
expect_rc 0 ca bundle -o "$T/root1.pem"
expect_rc 0 ca issue --public-key "$T/ed.pub" --cn old-leaf --tenant acme -o "$T/old-leaf.pem"
expect_rc 0 ca rotate --key "$ROT_URI"
assert_contains "$T/out" "new CA certificate"
assert_contains "$T/out" "(ecdsa-p256)"
assert_contains "$T/err" "add this key's URI to ca.keys"
# Until the new key is listed in ca.keys, issuing says where to look; then it works.
expect_rc 5 ca issue --public-key "$T/p256.pub" --cn new-leaf --tenant acme -o "$T/new-leaf.pem"
assert_contains "$T/err" "add its URI to ca.keys"
config software ed25519 "$ROT_URI"
expect_rc 0 ca bundle -o "$T/bundle2.pem"
[ "$(grep -c BEGIN "$T/bundle2.pem")" = 2 ] || fail "bundle after rotate should hold two certificates"
openssl x509 -in "$T/bundle2.pem" -out "$T/root2.pem"
if cmp -s <(openssl x509 -in "$T/root2.pem" -outform DER) <(openssl x509 -in "$T/root1.pem" -outform DER); then
    fail "the newest certificate must come first"
fi
expect_rc 0 ca bundle --cross -o "$T/cross2.pem"
[ "$(grep -c BEGIN "$T/cross2.pem")" = 1 ] || fail "one cross-signed certificate"
$CHECK ca "$T/cross2.pem" --path-len 0 --issuer "$T/root1.pem" || fail "cross certificate checks (path length one less than the root's)"
expect_rc 0 ca issue --public-key "$T/p256.pub" --cn new-leaf --tenant acme -o "$T/new-leaf.pem"
$CHECK leaf "$T/new-leaf.pem" --cn new-leaf --tenant acme --issuer "$T/root2.pem" || fail "issued by the new CA"
openssl verify -CAfile "$T/bundle2.pem" "$T/old-leaf.pem" "$T/new-leaf.pem" >/dev/null 2>&1 ||
    fail "both leaves must verify against the rotated bundle"
openssl verify -CAfile "$T/root1.pem" -untrusted "$T/cross2.pem" "$T/new-leaf.pem" >/dev/null 2>&1 ||
    fail "the new leaf must verify with the old root and the cross certificate"
cat "$T/new-leaf.pem" "$T/cross2.pem" >"$T/chain.pem"
certtool --verify --load-ca-certificate "$T/root1.pem" --infile "$T/chain.pem" >"$T/certtool.out" 2>&1 || {
    cat "$T/certtool.out" >&2
    fail "certtool: new leaf via the cross certificate to the old root"
}
if openssl verify -CAfile "$T/root1.pem" "$T/new-leaf.pem" >/dev/null 2>&1; then
    fail "without the cross certificate the old root must not vouch for the new leaf"
fi
expect_rc 0 ca rotate --type ed25519
expect_rc 0 ca list
[ "$(grep -c . "$T/out")" = 3 ] || fail "three CA certificates listed"
expect_rc 0 secret show ca.key
assert_contains "$T/out" "keys: 2"
expect_rc 0 ca retire
expect_rc 0 secret show ca.key
assert_contains "$T/out" "keys: 1"
expect_rc 0 ca bundle -o "$T/bundle3.pem"
[ "$(grep -c BEGIN "$T/bundle3.pem")" = 2 ] || fail "two certificates after one retire"
if openssl verify -CAfile "$T/bundle3.pem" "$T/old-leaf.pem" >/dev/null 2>&1; then
    fail "a leaf of the retired CA must no longer verify"
fi
openssl verify -CAfile "$T/bundle3.pem" "$T/new-leaf.pem" >/dev/null 2>&1 || fail "new leaf after retire"
expect_rc 0 ca retire
expect_rc 7 ca retire
assert_contains "$T/err" "one certificate only"
expect_rc 0 ca issue --public-key "$T/ed.pub" --cn last --tenant acme -o "$T/last.pem"
expect_rc 0 ca bundle -o "$T/bundle4.pem"
openssl verify -CAfile "$T/bundle4.pem" "$T/last.pem" >/dev/null 2>&1 || fail "issuance after two retires"

echo "# two concurrent ca init: exactly one wins, the other changes nothing"
for round in 1 2 3; do
    ns_config <<EOF
cluster_id: ca-test
storage: {backend: file, path: $T/race-$round}
encryption_key: {source: file, path: $T/kek.key}
EOF
    "$NS_CLI" -c "$T/config.yaml" ca init >"$T/r1.out" 2>"$T/r1.err" &
    p1=$!
    "$NS_CLI" -c "$T/config.yaml" ca init >"$T/r2.out" 2>"$T/r2.err" &
    p2=$!
    rc1=0 rc2=0
    wait "$p1" || rc1=$?
    wait "$p2" || rc2=$?
    if ! { [ "$rc1" = 0 ] && [ "$rc2" = 7 ]; } && ! { [ "$rc1" = 7 ] && [ "$rc2" = 0 ]; }; then
        cat "$T/r1.err" "$T/r2.err" >&2
        fail "round $round: exit codes $rc1 and $rc2, want 0 and 7"
    fi
    winner=$T/r1.out
    [ "$rc1" = 0 ] || winner=$T/r2.out
    id=$(sed -n 's/.*key id \([^ ]*\) .*/\1/p' "$winner")
    [ -n "$id" ] || fail "round $round: the winner printed no key id"
    expect_rc 0 ca list
    assert_contains "$T/out" "$id"
    [ "$(grep -c . "$T/out")" = 1 ] || fail "round $round: one CA certificate"
    expect_rc 0 secret show ca.key
    assert_contains "$T/out" "keys: 1"
    assert_contains "$T/out" "$id"
done
