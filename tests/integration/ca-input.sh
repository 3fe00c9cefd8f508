#!/usr/bin/env bash
# Covers: bad input to the ca commands gets a clear error and its exit code and changes nothing; 1,000 issued
# serials are all distinct, positive, 16 octets, and each is logged once with that serial.
#
# In detail: without a CA, issue/bundle/list exit 3. Usage errors (exit 2): both or neither of --csr and
# --public-key, no --tenant, --role/--kind outside their values, a malformed --ttl, pin-value in --key, a
# non-signing --type. Bad input (exit 8): a public key that is RSA-1024, P-521, or not a key; a DNS name that is
# not LDH or carries a comma-separated second name; an invalid IP or URI; a CN with a control character or longer
# than 64; a tenant outside [A-Za-z0-9._-]; a lifetime beyond the CA's. A CSR whose signature does not verify
# exits 4. Rotating a software CA to another key type exits 7. A corrupt cluster/ca.crt exits 8. After all of
# these the bundle, the ca.key secret and the certificate log are byte for byte what they were.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need python3 openssl
CHECK="python3 $top_srcdir/tests/tools/certcheck.py"

head -c 32 /dev/urandom >"$T/kek.key"
chmod 0600 "$T/kek.key"
B=$T/bucket
ns_config <<EOF
cluster_id: ca-input
storage: {backend: file, path: $B}
encryption_key: {source: file, path: $T/kek.key}
ca:
  validity: 30d
EOF

openssl genpkey -algorithm ed25519 -out "$T/ed.key" 2>/dev/null
openssl pkey -in "$T/ed.key" -pubout -out "$T/ed.pub"

echo "# no CA yet"
expect_rc 3 ca issue --public-key "$T/ed.pub" --cn a --tenant t
assert_contains "$T/err" "ca init"
expect_rc 3 ca bundle
expect_rc 3 ca list
expect_rc 2 ca init --type random
expect_rc 2 ca init --type ed448
expect_rc 2 ca init --key "pkcs11:token=x;object=y?pin-value=1234"
assert_contains "$T/err" "pin-value"
ns_token ci 1234
expect_rc 2 ca init --key "pkcs11:token=ci;id=%01?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-ci"
assert_contains "$T/err" "has no object= to label the new key"
[ ! -e "$B/cluster" ] || fail "refused commands must not create anything"

expect_rc 0 ca init --type ecdsa-p256
expect_rc 0 ca issue --public-key "$T/ed.pub" --cn first --tenant acme -o "$T/first.pem"

snapshot() {
    (cd "$B" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/snap.$1"
}
snapshot before

echo "# usage errors"
expect_rc 2 ca issue --cn a --tenant t
expect_rc 2 ca issue --public-key "$T/ed.pub" --csr "$T/ed.pub" --cn a --tenant t
expect_rc 2 ca issue --public-key "$T/ed.pub" --cn a
expect_rc 2 ca issue --public-key "$T/ed.pub" --cn a --tenant t --role admin
expect_rc 2 ca issue --public-key "$T/ed.pub" --cn a --tenant t --kind peer
expect_rc 2 ca issue --public-key "$T/ed.pub" --cn a --tenant t --ttl 10y
expect_rc 2 ca issue --public-key "$T/ed.pub" --cn a --tenant t --ttl 0d
expect_rc 2 ca issue --public-key "$T/ed.pub" --cn a --tenant t --ttl 1h30m
expect_rc 2 ca issue --public-key "$T/ed.pub" --cn a --tenant t extra

echo "# bad keys and requests"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$T/rsa1024.key" 2>/dev/null
openssl pkey -in "$T/rsa1024.key" -pubout -out "$T/rsa1024.pub"
expect_rc 8 ca issue --public-key "$T/rsa1024.pub" --cn a --tenant t
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out "$T/p521.key" 2>/dev/null
openssl pkey -in "$T/p521.key" -pubout -out "$T/p521.pub"
expect_rc 8 ca issue --public-key "$T/p521.pub" --cn a --tenant t
printf 'not a key\n' >"$T/junk.pub"
expect_rc 8 ca issue --public-key "$T/junk.pub" --cn a --tenant t
assert_contains "$T/err" "not a PEM public key"
expect_rc 8 ca issue --public-key "$T/ed.key" --cn a --tenant t
expect_rc 3 ca issue --public-key "$T/missing.pub" --cn a --tenant t
# A request whose signature was made by another key: same subject and key, signature of the other.
openssl req -new -key "$T/ed.key" -subj "/CN=victim" -out "$T/good.csr"
openssl genpkey -algorithm ed25519 -out "$T/other.key" 2>/dev/null
python3 - "$T/good.csr" "$T/other.key" "$T/bad.csr" <<'PY'
import sys, warnings
warnings.simplefilter("ignore")
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
csr = x509.load_pem_x509_csr(open(sys.argv[1], "rb").read())
other = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
der = bytearray(csr.public_bytes(serialization.Encoding.DER))
sig = csr.signature
bad = other.sign(csr.tbs_certrequest_bytes)
assert len(bad) == len(sig) == 64
i = bytes(der).rfind(sig)
der[i:i + 64] = bad
open(sys.argv[3], "wb").write(x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM))
PY
expect_rc 4 ca issue --csr "$T/bad.csr" --tenant t
assert_contains "$T/err" "signature does not verify"
expect_rc 8 ca issue --csr "$T/ed.pub" --tenant t

echo "# bad names"
for dns in "bad..name" "-lead.example" "trail-.example" "under_score.example" "a.example,DNS:evil.example" \
    "sp ace.example" ""; do
    expect_rc 8 ca issue --public-key "$T/ed.pub" --cn a --tenant t --dns "$dns"
done
for ip in 999.1.1.1 10.0.0 "::g" "10.0.0.1/8"; do
    expect_rc 8 ca issue --public-key "$T/ed.pub" --cn a --tenant t --ip "$ip"
done
for uri in "no-scheme" "spiffe://x/ y" "1http://x" "http:"; do
    expect_rc 8 ca issue --public-key "$T/ed.pub" --cn a --tenant t --uri "$uri"
done
expect_rc 8 ca issue --public-key "$T/ed.pub" --cn "$(printf 'a\tb')" --tenant t
expect_rc 8 ca issue --public-key "$T/ed.pub" --cn "$(printf 'x%.0s' $(seq 65))" --tenant t
expect_rc 8 ca issue --public-key "$T/ed.pub" --cn a --tenant "a/b"
expect_rc 8 ca issue --public-key "$T/ed.pub" --cn a --tenant ".hidden"
expect_rc 8 ca issue --public-key "$T/ed.pub" --cn a --tenant t --shard "../x"
echo "# a lifetime beyond the CA's (30 days)"
expect_rc 8 ca issue --public-key "$T/ed.pub" --cn a --tenant t --ttl 31d
assert_contains "$T/err" "outlive its CA"

echo "# rotating a software CA to another type"
expect_rc 7 ca rotate --type ed25519
assert_contains "$T/err" "ecdsa-p256 keys"
snapshot after
diff "$T/snap.before" "$T/snap.after" >&2 || fail "refused commands changed the bucket"

echo "# a corrupt bundle"
cp "$B/cluster/ca.crt" "$T/ca.crt.saved"
printf 'garbage\n' >"$B/cluster/ca.crt"
expect_rc 8 ca issue --public-key "$T/ed.pub" --cn a --tenant t
expect_rc 8 ca bundle
openssl req -new -x509 -key "$T/ed.key" -subj "/CN=leaf" -addext basicConstraints=CA:FALSE -out "$B/cluster/ca.crt" \
    -days 1 2>/dev/null
expect_rc 8 ca list
assert_contains "$T/err" "not a CA certificate"
cp "$T/ca.crt.saved" "$B/cluster/ca.crt"

echo "# 1,000 certificates: distinct serials, each logged once"
: >"$T/serials"
for i in $(seq 1000); do
    "$NS_CLI" -c "$T/config.yaml" ca issue --public-key "$T/ed.pub" --cn "vm-$i" --tenant bulk -o "$T/c.pem" ||
        fail "issue $i"
    $CHECK serial "$T/c.pem" >>"$T/serials" || fail "serial $i"
done
[ "$(sort -u "$T/serials" | wc -l)" = 1000 ] || fail "serials are not all distinct"
awk 'length($0) != 32 || $0 !~ /^[4-7]/ { bad = 1 } END { exit bad }' "$T/serials" ||
    fail "every serial is 16 octets with the top bit clear and the next set"
[ "$(find "$B/shard/default/certlog" -name 'bulk.*' | wc -l)" = 1000 ] || fail "1000 log entries"
cat "$B"/shard/default/certlog/bulk.* | python3 -c '
import json, sys
seen = [json.loads(l)["serial"] for l in sys.stdin.read().replace("}{", "}\n{").splitlines()]
want = set(open(sys.argv[1]).read().split())
assert len(seen) == 1000 and set(seen) == want, (len(seen), len(set(seen) ^ want))
' "$T/serials" || fail "the log's serials are not the certificates' serials"
