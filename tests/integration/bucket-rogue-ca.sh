#!/usr/bin/env bash
# Regression test, issue 14 ("the object store is not trusted"), the rogue-CA append: an attacker with write
# access to the bucket (file store here) appends a CA certificate of their own to cluster/ca.crt, makes a
# client certificate with it for an identity that is registered (O=demo, CN=demo-vm, role agent) and names
# that certificate in the identity's registration record (plain JSON). Before the fix the server trusted
# every certificate of the bundle and answered GET /v1/agent/files with 200 and the decrypted files. Now only certificates that the CA keys held by the server vouch for are trusted
# (doc/threat-model.md, doc/ca.md):
#   - the TLS handshake passes (the server asks for a certificate and accepts any: authz.c decides per
#     request), and GET /v1/agent/files answers 401 unauthorized with no file in the body;
#   - the server logs one warning naming the rogue certificate's subject and SHA-256 fingerprint, and counts
#     it in nstance_ca_certificates_ignored_total;
#   - GET /v1/ca, the ca.crt file of the agent's template, `ca bundle` and `ca list` do not carry it;
#   - `ca rotate` writes back the bundle without it; the legitimate agent keeps getting its files;
#   - `ca bundle --cross` leaves out a cross certificate replaced by the rogue CA.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need curl openssl python3
ns_need_py cryptography
CL="python3 $top_srcdir/tests/tools/srvclient.py"
field() { # FILE MEMBER: a string member of a JSON answer (json alone: quicker to start than srvclient.py)
    python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# No config key newer than the bug, so that this test also runs against a build from before the fix.
ns_server_config "$T/config.yaml" "$T/cache"
expect_rc 0 ca init
expect_rc 0 secret create registration-nonce.key --type ecdsa-p256
expect_rc 0 secret create k8s-sa.key --type ed25519
expect_rc 0 secret create web.key --type ecdsa-p256
expect_rc 0 ca bundle -o "$T/ca.pem"
ns_server_start a "$T/config.yaml"
PORT=$SRV_PORT
PID=$SRV_PID
ns_server_ready "$PORT"
URL=https://127.0.0.1:$PORT

files() { # NAME: status of GET /v1/agent/files with $T/NAME.{crt,key}; the answer in $T/NAME.files
    ns_https "$T/$1.files" --cert "$T/$1.crt" --key "$T/$1.key" "$URL/v1/agent/files"
}

# ---- the legitimate VM registers (tenant demo, sub demo-vm, group cp) ----
expect_rc 0 nonce issue --kind agent --sub demo-vm --tenant demo --shard s1 --group cp
assert_eq "$(ns_server_register "$PORT" vm "$(cat "$T/out")")" 200 "demo/demo-vm registers"
assert_eq "$(files vm)" 200 "the VM gets its files"

# ---- the attacker: a CA of their own, appended to the bundle, and a client certificate for demo/demo-vm ----
cat >"$T/rogue.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = rogue CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
1.3.6.1.4.1.999999.1 = ASN1:UTF8String:agent
EOF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/rogue-ca.key" \
    -out "$T/rogue-ca.crt" -days 30 -config "$T/rogue.cnf" -extensions ca 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/evil.key" \
    -subj "/O=demo/CN=demo-vm" -out "$T/evil.csr" 2>/dev/null
openssl x509 -req -in "$T/evil.csr" -CA "$T/rogue-ca.crt" -CAkey "$T/rogue-ca.key" -CAcreateserial \
    -days 1 -extfile "$T/rogue.cnf" -extensions leaf -out "$T/evil.crt" 2>/dev/null
FP=$(openssl x509 -in "$T/rogue-ca.crt" -noout -fingerprint -sha256 | sed 's/^.*=//; s/://g' | tr 'A-F' 'a-f')
# A line of the rogue certificate's base64 that no other certificate has (the fourth: past the common prefix).
MARK=$(sed -n 4p "$T/rogue-ca.crt")
cat "$T/rogue-ca.crt" >>"$T/bucket/cluster/ca.crt"
# The registration record binds the registered certificate (its SHA-256); the record is plain JSON in the
# bucket, so the attacker names their own certificate in it too (restored below).
REC=$T/bucket/shard/s1/instance/demo/demo-vm.json
cp "$REC" "$T/vm.rec"
EVILFP=$(openssl x509 -in "$T/evil.crt" -outform DER | sha256sum | cut -d' ' -f1)
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["fingerprint"]=sys.argv[2]; json.dump(d, open(sys.argv[1], "w"))' \
    "$REC" "$EVILFP"

# The server sees the bundle change within cache_check (1s): wait for it to reopen the CA (it then issues itself a new TLS certificate, logged at warning).
for _ in $(seq 1 100); do
    grep -q 'new TLS certificate' "$T/a.log" && break
    sleep 0.1
done
assert_contains "$T/a.log" 'new TLS certificate' "the server reloaded the changed bundle"

# ---- the server refuses the rogue client certificate ----
# The handshake itself completes (curl's exit status 0 and an HTTP status): the refusal is HTTP's.
code=$(curl -s --cacert "$T/ca.pem" --cert "$T/evil.crt" --key "$T/evil.key" -o "$T/evil.files" \
    -w '%{http_code}' "$URL/v1/agent/files") || fail "the TLS handshake with the rogue certificate failed (curl $?)"
assert_eq "$code" 401 "GET /v1/agent/files with a certificate of the rogue CA"
assert_eq "$(field "$T/evil.files" error)" unauthorized "the refusal's error code"
assert_not_contains "$T/evil.files" '"files"' "nothing is served to the rogue certificate"
code=$(curl -s --cacert "$T/ca.pem" --cert "$T/evil.crt" --key "$T/evil.key" -o "$T/evil.renew" \
    -w '%{http_code}' --data-binary '{}' "$URL/v1/agent/renew") || true
assert_eq "$code" 401 "POST /v1/agent/renew with a certificate of the rogue CA"
assert_contains "$T/a.log" "cluster/ca.crt holds a certificate that no CA key held here vouches for (subject \"CN=rogue CA\", SHA-256 $FP): ignored, not trusted and not served" \
    "the ignored certificate is logged with its subject and fingerprint"
assert_eq "$(grep -c "$FP" "$T/a.log")" 1 "one log line for the rogue certificate"
cp "$T/vm.rec" "$REC"

# ---- and serves no trust in it ----
assert_eq "$(ns_https "$T/ca.json" "$URL/v1/ca")" 200 "GET /v1/ca"
field "$T/ca.json" ca_bundle >"$T/served.pem"
assert_not_contains "$T/served.pem" "$MARK" "GET /v1/ca does not serve the rogue CA"
cmp -s "$T/served.pem" "$T/ca.pem" || fail "GET /v1/ca is not the bundle of the cluster's own CA"
assert_eq "$(files vm)" 200 "the VM still gets its files"
mkdir "$T/vmfiles"
$CL files "$T/vm.files" "$T/vmfiles" >/dev/null
cmp -s "$T/vmfiles/etc_nstance_ca.crt" "$T/ca.pem" || fail "the agent's ca.crt is not the cluster's own bundle"
assert_eq "$(ns_https "$T/metrics" "$URL/metrics")" 200 "metrics"
assert_contains "$T/metrics" "nstance_ca_certificates_ignored_total 1" "the ignored certificate is counted"

# ---- the operator's CLI does not trust it either ----
expect_rc 0 ca bundle -o "$T/cli.pem"
assert_not_contains "$T/cli.pem" "$MARK" "ca bundle does not print the rogue CA"
assert_contains "$T/err" "SHA-256 $FP" "ca bundle names the certificate it ignored"
expect_rc 0 ca list
assert_not_contains "$T/out" "rogue" "ca list does not list the rogue CA"
expect_rc 0 ca rotate
assert_not_contains "$T/bucket/cluster/ca.crt" "$MARK" "ca rotate writes the bundle back without the rogue CA"
[ "$(grep -c 'BEGIN CERTIFICATE' "$T/bucket/cluster/ca.crt")" = 2 ] || fail "the rotated bundle is not new + old"
# A cross certificate replaced by the rogue CA is not printed by `ca bundle --cross` (nor sent by the server:
# ca-rotate-lockout.sh).
XF=$(ls "$T"/bucket/cluster/ca-cross/*.crt)
expect_rc 0 ca bundle --cross -o "$T/cross.pem"
cmp -s "$XF" "$T/cross.pem" || fail "ca bundle --cross does not print the cross certificate of the rotation"
# A certificate of a held key issued by a vouched-for CA (the cross certificate) is kept if it is in the bundle.
cp "$T/bucket/cluster/ca.crt" "$T/rotated.crt"
cat "$XF" >>"$T/bucket/cluster/ca.crt"
expect_rc 0 ca list
assert_eq "$(wc -l <"$T/out")" 3 "ca list: new, old and the cross certificate"
assert_not_contains "$T/err" "vouches for" "the cross certificate in the bundle is not ignored"
cp "$T/rotated.crt" "$T/bucket/cluster/ca.crt"
cp "$T/rogue-ca.crt" "$XF"
expect_rc 0 ca bundle --cross -o "$T/cross2.pem"
[ ! -s "$T/cross2.pem" ] || fail "ca bundle --cross printed a cross certificate that is the rogue CA"
assert_contains "$T/err" "is not a certificate of the CA's key issued by the CA before it: ignored" \
    "the replaced cross certificate is named"

ns_server_stop "$PID"
assert_eq "$NS_RC" 0 "SIGTERM exit status (a sanitizer report would change it)"
echo "PASS"
