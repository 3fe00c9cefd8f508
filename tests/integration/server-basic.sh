#!/usr/bin/env bash
# Covers: nstance-secretsd end to end on 127.0.0.1 (a free port): /health 503 while the server cannot load
# (its KEK file unreadable at start) and 200 once it can; the server's TLS certificate (TLS 1.3, issued by the
# cluster CA for server.names, P-256, serverAuth); POST /v1/register with a nonce from `nonce issue` and the
# certificate checked with openssl and python3-cryptography (CN, single O, role extension, clientAuth, SANs
# from hostname/ipv4/ipv6, lifetime agent_cert_ttl); the registration record and certificate log entry;
# GET /v1/agent/files for the agent's template (contents equal to `secret export` and the CA bundle, sha256,
# version = hash of the files, ETag, 304 with If-None-Match); a template secret missing at start (a warning; 503
# for its agents until it is created, then served); POST /v1/agent/renew with the old key and with a
# new one (record updated); an operator registration and /v1/operator/renew; /metrics content; one log line
# per request that carries no nonce; SIGTERM exits 0.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need curl openssl python3
ns_need_py cryptography
CL="python3 $top_srcdir/tests/tools/srvclient.py"
OID=1.3.6.1.4.1.999999.1

head -c 32 /dev/urandom >"$T/kek.key"
chmod 0600 "$T/kek.key"
ns_config <<EOF
cluster_id: srv-test
storage: {backend: file, path: $T/bucket}
encryption_key: {source: file, path: $T/kek.key}
cache_dir: $T/cache
shard: s1
server:
  listen: "127.0.0.1:0"
  names: [localhost, 127.0.0.1]
  agent_cert_ttl: 2h
  operator_cert_ttl: 1h
  cache_check: 1s
  threads: 2
  renew_min_interval: 0s
groups: {cp: control-plane, late: late}
templates:
  late:
    files:
      - {path: /etc/late.key, secret: late.key, format: raw}
  control-plane:
    files:
      - {path: /etc/kubernetes/pki/sa.key, secret: k8s-sa.key, format: pem-bundle, mode: "0600"}
      - {path: /etc/kubernetes/pki/sa.pub, secret: k8s-sa.key, format: public-pem-bundle, mode: "0644", owner: kube, group: kube}
      - {path: /etc/nstance/ca.crt, ca_bundle: true, mode: "0644"}
EOF
expect_rc 0 ca init
expect_rc 0 secret create registration-nonce.key --type ed25519
expect_rc 0 secret create k8s-sa.key --type ecdsa-p256
expect_rc 0 ca bundle -o "$T/ca.pem"

# Start with the KEK unreadable: the server listens, answers 503 "starting", and retries.
chmod 0000 "$T/kek.key"
if [ "$(id -u)" = 0 ]; then
    mv "$T/kek.key" "$T/kek.key.away" # root reads 0000 files: take it away instead
fi
ns_server_start s1 "$T/config.yaml"
PORT=$SRV_PORT
PID=$SRV_PID
code=$(curl -sk -o "$T/h" -w '%{http_code}' "https://127.0.0.1:$PORT/health")
assert_eq "$code" 503 "/health before load"
assert_contains "$T/h" "starting" "/health body before load"
[ -f "$T/kek.key.away" ] && mv "$T/kek.key.away" "$T/kek.key"
chmod 0600 "$T/kek.key"
ns_server_ready "$PORT"
code=$(ns_https "$T/h" "https://127.0.0.1:$PORT/health")
assert_eq "$code" 200 "/health after load, trusting only the CA bundle"
assert_contains "$T/h" "ok" "/health body"
$CL servercert "$PORT" "$T/ca.pem" localhost 127.0.0.1 || fail "server certificate"
assert_contains "$T/s1.log" "template late: secret late.key (/etc/late.key): not found" "a missing secret is a warning at start"
code=$(ns_https "$T/h" "https://localhost:$PORT/health")
assert_eq "$code" 200 "the certificate is valid for localhost"

# register() NAME NONCE [HOSTNAME IPV4 IPV6]: a fresh Ed25519 key in $T/NAME.key, the answer in $T/NAME.json,
# the certificate in $T/NAME.crt; prints the status.
register() {
    local name=$1 nonce=$2
    shift 2
    openssl genpkey -algorithm ed25519 -out "$T/$name.key" 2>/dev/null
    openssl pkey -in "$T/$name.key" -pubout -out "$T/$name.pub"
    $CL regbody "$nonce" "$T/$name.pub" "$@" >"$T/$name.req"
    local code
    code=$(ns_https "$T/$name.json" -H 'Content-Type: application/json' --data-binary @"$T/$name.req" \
        "https://127.0.0.1:$PORT/v1/register")
    if [ "$code" = 200 ]; then
        $CL field "$T/$name.json" certificate >"$T/$name.crt"
    fi
    echo "$code"
}

expect_rc 0 nonce issue --kind agent --sub vm-1 --tenant acme --shard s1 --group cp
NONCE=$(cat "$T/out")
code=$(register vm1 "$NONCE" vm-1.example 10.0.0.5 2001:db8::5)
assert_eq "$code" 200 "register"
life=$($CL certcheck "$T/vm1.crt" "$T/ca.pem" vm-1 acme agent $OID vm-1.example 10.0.0.5 2001:db8::5) ||
    fail "the agent certificate"
assert_eq "$life" $((2 * 3600 + 300)) "agent certificate lifetime = agent_cert_ttl (+5 min back-dating)"
openssl verify -CAfile "$T/ca.pem" -purpose sslclient "$T/vm1.crt" >"$T/v" 2>&1 || {
    cat "$T/v" >&2
    fail "openssl verify of the agent certificate"
}
$CL field "$T/vm1.json" ca_bundle >"$T/vm1.ca"
cmp -s "$T/vm1.ca" "$T/ca.pem" || fail "ca_bundle in the answer is not cluster/ca.crt"
$CL field "$T/vm1.json" expires_at | grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$' ||
    fail "expires_at is not RFC 3339 UTC"
rec=$T/bucket/shard/s1/instance/acme/vm-1.json
[ -f "$rec" ] || fail "no registration record at shard/s1/instance/acme/vm-1.json"
assert_eq "$($CL field "$rec" fingerprint)" "$(openssl x509 -in "$T/vm1.crt" -outform DER | sha256sum | cut -d' ' -f1)" \
    "record fingerprint (SHA-256 of the certificate)"
serial=$(openssl x509 -in "$T/vm1.crt" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' | sed 's/^0*//')
assert_eq "$($CL field "$rec" serial)" "$serial" "record serial"
assert_eq "$($CL field "$rec" group)" cp "record group"
assert_eq "$($CL field "$rec" hostname)" vm-1.example "record hostname"
assert_eq "$($CL field "$rec" kind)" agent "record kind"
ls "$T/bucket/shard/s1/certlog/" | grep -q '^acme\..*\.vm-1\.json$' || fail "no certificate log entry"

# Files: the template, byte for byte.
AG=(--cert "$T/vm1.crt" --key "$T/vm1.key")
code=$(ns_https "$T/files.json" -D "$T/files.hdr" "${AG[@]}" "https://127.0.0.1:$PORT/v1/agent/files")
assert_eq "$code" 200 "agent files"
mkdir -p "$T/files"
$CL files "$T/files.json" "$T/files" >"$T/files.list" || fail "files answer"
assert_eq "$(cat "$T/files.list")" "/etc/kubernetes/pki/sa.key 0600 root root
/etc/kubernetes/pki/sa.pub 0644 kube kube
/etc/nstance/ca.crt 0644 root root" "files, modes and owners in template order"
expect_rc 0 secret export k8s-sa.key --format pem-bundle
cmp -s "$T/out" "$T/files/etc_kubernetes_pki_sa.key" || fail "sa.key content differs from secret export"
expect_rc 0 secret export k8s-sa.key --format public-pem-bundle
cmp -s "$T/out" "$T/files/etc_kubernetes_pki_sa.pub" || fail "sa.pub content differs from secret export"
cmp -s "$T/ca.pem" "$T/files/etc_nstance_ca.crt" || fail "ca.crt content differs from the bundle"
VERSION=$($CL field "$T/files.json" version)
assert_contains "$T/files.hdr" "ETag: \"$VERSION\"" "ETag is the quoted version"
code=$(ns_https "$T/files304" -H "If-None-Match: \"$VERSION\"" "${AG[@]}" "https://127.0.0.1:$PORT/v1/agent/files")
assert_eq "$code" 304 "If-None-Match with the current version"
[ ! -s "$T/files304" ] || fail "304 with a body"
code=$(ns_https "$T/files2" -H 'If-None-Match: "0000"' "${AG[@]}" "https://127.0.0.1:$PORT/v1/agent/files")
assert_eq "$code" 200 "If-None-Match with another version"

# Renew: same key, then a new key (with the first certificate again: the previous one, within its hand-over).
code=$(ns_https "$T/renew.json" "${AG[@]}" -H 'Content-Type: application/json' --data-binary '{}' \
    "https://127.0.0.1:$PORT/v1/agent/renew")
assert_eq "$code" 200 "agent renew with {}"
$CL field "$T/renew.json" certificate >"$T/renew.crt"
$CL certcheck "$T/renew.crt" "$T/ca.pem" vm-1 acme agent $OID vm-1.example 10.0.0.5 2001:db8::5 >/dev/null ||
    fail "renewed certificate"
[ "$(openssl x509 -in "$T/renew.crt" -noout -pubkey)" = "$(cat "$T/vm1.pub")" ] || fail "renew {} changed the key"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/new.key" 2>/dev/null
openssl pkey -in "$T/new.key" -pubout -out "$T/new.pub"
python3 -c 'import json,sys; print(json.dumps({"public_key": open(sys.argv[1]).read()}))' "$T/new.pub" >"$T/new.req"
code=$(ns_https "$T/renew2.json" "${AG[@]}" --data-binary @"$T/new.req" "https://127.0.0.1:$PORT/v1/agent/renew")
assert_eq "$code" 200 "agent renew with a new key"
$CL field "$T/renew2.json" certificate >"$T/renew2.crt"
[ "$(openssl x509 -in "$T/renew2.crt" -noout -pubkey)" = "$(cat "$T/new.pub")" ] || fail "renew did not use the new key"
serial=$(openssl x509 -in "$T/renew2.crt" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' | sed 's/^0*//')
assert_eq "$($CL field "$rec" serial)" "$serial" "record serial after renew"
assert_eq "$($CL field "$rec" public_key)" "$(cat "$T/new.pub")" "record public key after renew"
code=$(ns_https "$T/files3" --cert "$T/renew2.crt" --key "$T/new.key" "https://127.0.0.1:$PORT/v1/agent/files")
assert_eq "$code" 200 "files with the renewed certificate"

# A secret that does not exist yet: 503 for its agents, served once it is created (a cache miss).
expect_rc 0 nonce issue --kind agent --sub vm-late --tenant acme --shard s1 --group late
assert_eq "$(register late "$(cat "$T/out")")" 200 "register in group late"
code=$(ns_https "$T/late.files" --cert "$T/late.crt" --key "$T/late.key" "https://127.0.0.1:$PORT/v1/agent/files")
assert_eq "$code" 503 "files whose secret does not exist"
assert_eq "$($CL field "$T/late.files" error)" unavailable "503 error code"
expect_rc 0 secret create late.key --type random --bytes 16
code=$(ns_https "$T/late.files" --cert "$T/late.crt" --key "$T/late.key" "https://127.0.0.1:$PORT/v1/agent/files")
assert_eq "$code" 200 "files once the secret exists"
mkdir -p "$T/latef"
$CL files "$T/late.files" "$T/latef" >/dev/null || fail "late files"
expect_rc 0 secret export late.key --format raw
cmp -s "$T/out" "$T/latef/etc_late.key" || fail "late.key content"

# Operators.
expect_rc 0 nonce issue --kind operator --sub alice --tenant acme
code=$(register alice "$(cat "$T/out")")
assert_eq "$code" 200 "operator register"
life=$($CL certcheck "$T/alice.crt" "$T/ca.pem" alice acme operator $OID) || fail "operator certificate"
assert_eq "$life" $((3600 + 300)) "operator certificate lifetime = operator_cert_ttl"
[ -f "$T/bucket/cluster/operator/acme/alice.json" ] || fail "no operator record"
code=$(ns_https "$T/op.json" --cert "$T/alice.crt" --key "$T/alice.key" --data-binary '{}' \
    "https://127.0.0.1:$PORT/v1/operator/renew")
assert_eq "$code" 200 "operator renew"

# Unknown path and wrong method.
code=$(ns_https "$T/e" "https://127.0.0.1:$PORT/v1/nothing")
assert_eq "$code" 404 "unknown path"
assert_eq "$($CL field "$T/e" error)" not_found "404 error code"
code=$(ns_https "$T/e" "https://127.0.0.1:$PORT/v1/register")
assert_eq "$code" 405 "GET /v1/register"
assert_eq "$($CL field "$T/e" error)" method_not_allowed "405 error code"

# Metrics.
code=$(ns_https "$T/metrics" "https://127.0.0.1:$PORT/metrics")
assert_eq "$code" 200 "metrics"
assert_contains "$T/metrics" 'nstance_requests_total{endpoint="register",status="200"} 3' "register count"
assert_contains "$T/metrics" 'nstance_requests_total{endpoint="agent_files",status="304"} 1' "304 count"
assert_contains "$T/metrics" 'nstance_registrations_total{kind="agent"} 2' "agent registrations"
assert_contains "$T/metrics" 'nstance_registrations_total{kind="operator"} 1' "operator registrations"
assert_contains "$T/metrics" 'nstance_certificates_issued_total 6' "certificates issued (3 registrations, 3 renewals)"
assert_contains "$T/metrics" 'nstance_request_duration_seconds_bucket{endpoint="register",le="+Inf"} 3' "histogram"
assert_contains "$T/metrics" 'nstance_cache_hits_total' "cache hits"
assert_contains "$T/metrics" 'nstance_token_operations_total{op="sign"}' "token operations"
assert_contains "$T/metrics" 'nstance_rate_limited_total{endpoint="register"} 0' "rate-limited registrations"
assert_contains "$T/metrics" 'nstance_rate_limited_total{endpoint="agent_renew"} 0' "rate-limited renewals"

# Log: one line per request, never the nonce.
assert_contains "$T/s1.log" "request POST /v1/register 200" "register logged"
assert_contains "$T/s1.log" "request GET /v1/agent/files 304" "304 logged"
assert_contains "$T/s1.log" "agent CN=vm-1,O=acme" "subject logged"
assert_not_contains "$T/s1.log" "$NONCE" "the nonce is never logged"
assert_not_contains "$T/s1.log" "${NONCE%%.*}" "no part of the nonce is logged"
assert_not_contains "$T/s1.log" "PRIVATE KEY" "no key logged"

# Remembered groups (doc/server.md "Caching"): vm-late registers again into group cp; its new certificate
# gets the control-plane template at once, not the remembered group; its old one (still valid) is retired by
# the new registration: 403 certificate_replaced, not the remembered group either (issue 12).
code=$(ns_https "$T/late.files" --cert "$T/late.crt" --key "$T/late.key" "https://127.0.0.1:$PORT/v1/agent/files")
assert_eq "$code" 200 "files of vm-late (group late, remembered)"
expect_rc 0 nonce issue --kind agent --sub vm-late --tenant acme --shard s1 --group cp
cp "$T/late.crt" "$T/late-old.crt" && cp "$T/late.key" "$T/late-old.key"
assert_eq "$(register late "$(cat "$T/out")")" 200 "vm-late registers again, group cp"
code=$(ns_https "$T/late.f" --cert "$T/late.crt" --key "$T/late.key" "https://127.0.0.1:$PORT/v1/agent/files")
assert_eq "$code" 200 "files of vm-late (new certificate) after the new registration"
mkdir -p "$T/late.d"
$CL files "$T/late.f" "$T/late.d" >"$T/late.list" || fail "files of late"
assert_contains "$T/late.list" "/etc/kubernetes/pki/sa.key" "new certificate: the control-plane template"
code=$(ns_https "$T/late-old.f" --cert "$T/late-old.crt" --key "$T/late-old.key" "https://127.0.0.1:$PORT/v1/agent/files")
assert_eq "$code" 403 "files of vm-late (old certificate) after the new registration"
assert_eq "$($CL field "$T/late-old.f" error)" certificate_replaced "old certificate: error code"

ns_server_stop "$PID"
assert_eq "$NS_RC" 0 "SIGTERM exit status"
echo "PASS"
