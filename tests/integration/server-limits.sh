#!/usr/bin/env bash
# Covers: nstance-secretsd under limits and faults, with its CA key in a SoftHSM token. Bodies over 64 KiB
# (413, and its 'refused' log line: the rest in server-refusals.sh); malformed JSON, a non-object and unknown members (400, JSON error); a client that sends half a request
# line is cut off after server.header_timeout while other clients are served, and headers that arrive within it
# are answered; server.max_connections (the extra connection is closed at once; after the others close, new
# ones work); the token failing during requests (tests/tools/faulty-pkcs11.c around SoftHSM: C_Sign and
# C_FindObjectsInit fail with CKR_DEVICE_ERROR, and the module's log proves the fault fired) (registration 503,
# /health still answers, the nonce is not used up) and the server serving again once it is back, without
# restart; storage refusing the nonce marker (503, and the same nonce registers once the store is back, exactly
# once); `secret rotate` reaching /v1/agent/files within server.cache_check (new version, new content), `ca
# rotate` picked up (new certificates from the new CA, certificates of the old CA still accepted, the server's
# own certificate issued again by the new CA); SIGHUP reloading templates (a new file appears), a broken config
# or an unreadable KEK on SIGHUP changing nothing; SIGTERM letting an in-flight request finish, then exit 0.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need curl openssl python3
ns_need_py cryptography
CL="python3 $top_srcdir/tests/tools/srvclient.py"
SLOW="python3 $top_srcdir/tests/tools/slowclient.py"

PIN=limits-2718
ns_token t1 "$PIN"
head -c 32 /dev/urandom >"$T/kek.key"
chmod 0600 "$T/kek.key"
# The CA keys are used through the fault-injecting module around SoftHSM (tests/tools/faulty-pkcs11.c): while
# the rules below are in place, signing and object lookups fail with CKR_DEVICE_ERROR (a token that stops
# answering), and work again once they are cleared.
ns_faulty_module
CAURI="pkcs11:token=t1;object=ca-1?module-path=$FAULTY_MODULE&pin-source=file:$T/pin-t1"
CAURI2="pkcs11:token=t1;object=ca-2?module-path=$FAULTY_MODULE&pin-source=file:$T/pin-t1"
write_config() { # EXTRA_FILE_LINE
    cat >"$T/config.yaml" <<EOF
cluster_id: limits
storage: {backend: file, path: $T/bucket}
encryption_key: {source: file, path: $T/kek.key}
cache_dir: $T/cache
shard: s1
ca:
  keys: ["$CAURI", "$CAURI2"]
server:
  listen: "127.0.0.1:0"
  cache_check: 1s
  header_timeout: 2s
  idle_timeout: 4s
  max_connections: 6
  threads: 2
groups: {cp: control-plane}
templates:
  control-plane:
    files:
      - {path: /etc/kubernetes/pki/sa.key, secret: k8s-sa.key, format: pem-bundle, mode: "0600"}
$1
EOF
}
write_config ""
# Both CA keys exist from the start (ca.keys are opened at start); ca rotate adopts the second one later.
ns_p11 t1 "$PIN" --keypairgen --key-type EC:prime256v1 --label ca-2 --id 02 --usage-sign || fail "pkcs11-tool keypairgen"
expect_rc 0 ca init --key "$CAURI"
expect_rc 0 secret create registration-nonce.key --type ed25519
expect_rc 0 secret create k8s-sa.key --type ed25519
expect_rc 0 secret create extra.key --type random --bytes 32
expect_rc 0 ca bundle -o "$T/ca.pem"
ns_server_start s "$T/config.yaml"
PORT=$SRV_PORT
PID=$SRV_PID
ns_server_ready "$PORT"
URL=https://127.0.0.1:$PORT
nonce() {
    expect_rc 0 nonce issue --kind agent --sub "$1" --tenant acme --shard s1 --group cp >&2
    cat "$T/out"
}
assert_eq "$(ns_server_register "$PORT" vm1 "$(nonce vm-1)")" 200 "register with the token CA key"
AG=(--cert "$T/vm1.crt" --key "$T/vm1.key")

# ---- bodies ----
head -c 70000 /dev/zero | tr '\0' 'a' >"$T/big"
# libevent answers 413 with the headers and closes with the rest unread: curl, rarely still sending then,
# fails on the reset (000) without reading the answer. Try again then (server-refusals.sh has the details).
for try in 1 2 3; do
    code=$(ns_https "$T/e" --data-binary @"$T/big" "$URL/v1/register")
    [ "$code" != 000 ] && break
done
assert_eq "$code" 413 "body over 64 KiB"
assert_contains "$T/s.log" "refused body_too_large 413 127.0.0.1:" "libevent's 413 is logged (src/server/refusals.c)"
printf '{"nonce": "abc", ' >"$T/bad"
code=$(ns_https "$T/e" --data-binary @"$T/bad" "$URL/v1/register")
assert_eq "$code" 400 "malformed JSON"
assert_eq "$($CL field "$T/e" error)" bad_request "400 error code"
code=$(ns_https "$T/e" --data-binary '[1,2]' "$URL/v1/register")
assert_eq "$code" 400 "not an object"
code=$(ns_https "$T/e" "${AG[@]}" --data-binary '{"public_key": "x", "more": 1}' "$URL/v1/agent/renew")
assert_eq "$code" 400 "renew with unknown members"
code=$(ns_https "$T/e" "${AG[@]}" --data-binary '{"public_key": 5}' "$URL/v1/agent/renew")
assert_eq "$code" 400 "renew with a mistyped key"

# ---- slow clients and the connection cap ----
$SLOW idle "$PORT" >"$T/idle.out" 2>"$T/idle.err" &
IDLE=$!
# The slow client holds its connection (TLS done, half a request line sent) before the other one asks:
# else "another client is served" would hold with nobody slow yet.
ns_wait_until 10 "the slow client did not connect" grep -q connected "$T/idle.err"
t0=$(date +%s%N)
code=$(ns_https "$T/h" "$URL/health")
t1=$(date +%s%N)
assert_eq "$code" 200 "another client is served while one is slow"
kill -0 "$IDLE" 2>/dev/null || fail "the slow client was gone before the other client's answer"
# A server blocked by the slow client would answer only when header_timeout (2s) cuts it off.
[ $(((t1 - t0) / 1000000)) -lt 1500 ] || fail "the other client waited $(((t1 - t0) / 1000000)) ms"
wait "$IDLE"
secs=$(cat "$T/idle.out")
python3 -c "import sys; s=float('$secs'); sys.exit(0 if 1.0 <= s <= 6.0 else 1)" ||
    fail "the slow client was cut off after $secs s (header_timeout 2s)"
assert_eq "$($SLOW trickle "$PORT" "$T/ca.pem" 1)" "HTTP/1.1 200 OK" "headers within header_timeout are answered"
secs=$($SLOW keepalive "$PORT")
python3 -c "import sys; s=float('$secs'); sys.exit(0 if 3.0 <= s <= 8.0 else 1)" ||
    fail "an idle keep-alive connection was closed after $secs s (idle_timeout 4s)"
$SLOW cap "$PORT" 6 >"$T/cap.out"
assert_eq "$(cat "$T/cap.out")" "refused
recovered" "max_connections 6: the 7th is closed, later ones work"
assert_contains "$T/s.log" "connection refused" "the refusal is logged"

# ---- the token fails, then comes back ----
ns_fault "fail C_Sign CKR_DEVICE_ERROR" "fail C_FindObjectsInit CKR_DEVICE_ERROR" # the token fails from now on
N2=$(nonce vm-2)
code=$(ns_server_register "$PORT" vm2 "$N2")
assert_eq "$code" 503 "registration while the token is away"
assert_eq "$($CL field "$T/vm2.json" error)" unavailable "503 error code"
code=$(ns_https "$T/h" "$URL/health")
assert_eq "$code" 200 "health while the token is away (the server is up)"
ns_fault_fired "C_Sign CKR_DEVICE_ERROR"
ns_fault_clear
ok=
for i in $(seq 1 50); do
    code=$(ns_server_register "$PORT" vm2 "$N2")
    if [ "$code" = 200 ]; then
        ok=1
        break
    fi
    sleep 0.2
done
[ -n "$ok" ] || fail "the server did not serve registrations again after the token came back (last $code)"
kill -0 "$PID" || fail "the server died"
code=$(ns_https "$T/m" "$URL/metrics")
assert_eq "$code" 200 "metrics"
grep -q '^nstance_token_errors_total [1-9]' "$T/m" || fail "token errors not counted"
assert_contains "$T/m" 'nstance_requests_total{endpoint="register",status="503"}' "503 counted"

# ---- storage fails during a registration (the ledger's marker cannot be written), then recovers ----
[ -d "$T/bucket/cluster/nonce-used" ] || fail "no nonce markers in the store"
mv "$T/bucket/cluster/nonce-used" "$T/nonce-used.away"
printf 'not a folder' >"$T/bucket/cluster/nonce-used"
N5=$(nonce vm-5)
code=$(ns_server_register "$PORT" vm5 "$N5")
assert_eq "$code" 503 "registration while the store cannot take the marker"
assert_eq "$($CL field "$T/vm5.json" error)" unavailable "503 error code (storage)"
rm "$T/bucket/cluster/nonce-used"
mv "$T/nonce-used.away" "$T/bucket/cluster/nonce-used"
assert_eq "$(ns_server_register "$PORT" vm5 "$N5")" 200 "the same nonce works once the store is back (not half-used)"
assert_eq "$(ns_server_register "$PORT" vm5b "$N5")" 409 "and only once"

# ---- secret rotation reaches the agent without restart ----
code=$(ns_https "$T/f1" "${AG[@]}" "$URL/v1/agent/files")
assert_eq "$code" 200 "files before rotation"
V1=$($CL field "$T/f1" version)
expect_rc 0 secret rotate k8s-sa.key
expect_rc 0 secret export k8s-sa.key --format pem-bundle
cp "$T/out" "$T/rotated.pem"
V2=$V1
for i in $(seq 1 40); do
    ns_https "$T/f2" "${AG[@]}" "$URL/v1/agent/files" >/dev/null
    V2=$($CL field "$T/f2" version)
    [ "$V2" != "$V1" ] && break
    sleep 0.25
done
[ "$V2" != "$V1" ] || fail "the rotated secret did not reach /v1/agent/files within 10 s"
mkdir -p "$T/f2d"
$CL files "$T/f2" "$T/f2d" >/dev/null || fail "files after rotation"
cmp -s "$T/rotated.pem" "$T/f2d/etc_kubernetes_pki_sa.key" || fail "files do not carry the rotated secret"
grep -c 'BEGIN PRIVATE KEY' "$T/f2d/etc_kubernetes_pki_sa.key" | grep -qx 2 || fail "the bundle should hold 2 keys"

# ---- CA rotation ----
expect_rc 0 ca rotate --key "$CAURI2"
expect_rc 0 ca bundle -o "$T/ca2.pem"
newest=$(sed -n '1,/END CERTIFICATE/p' "$T/ca2.pem")
printf '%s\n' "$newest" >"$T/newest.pem"
# $T/ca.pem still holds the old CA only: the server's new certificate reaches it through the cross
# certificate it sends (no hand copy of the new bundle: that hid issue 12's lockout).
new_ca_health() { curl -sf --cacert "$T/newest.pem" "$URL/health" >/dev/null 2>&1; }
ns_wait_until 30 "the server's certificate does not verify with the new CA alone" new_ca_health
assert_eq "$(ns_server_register "$PORT" vm3 "$(nonce vm-3)")" 200 "register after ca rotate"
openssl verify -CAfile "$T/newest.pem" "$T/vm3.crt" >/dev/null 2>&1 || fail "new certificates come from the new CA"
code=$(ns_https "$T/f3" "${AG[@]}" "$URL/v1/agent/files")
assert_eq "$code" 200 "a certificate of the old CA is still accepted"
$CL servercert "$PORT" "$T/newest.pem" localhost 127.0.0.1 || fail "the server's own certificate is not from the new CA"
assert_contains "$T/s.log" "new TLS certificate" "server certificate reissued"

# ---- SIGHUP ----
cp "$T/config.yaml" "$T/config.good"
printf 'cluster_id: [broken\n' >"$T/config.yaml"
kill -HUP "$PID"
# The reload ran (and was refused) before "nothing changed" is asserted.
ns_wait_until 10 "the broken config's reload was not refused" \
    grep -q "reload: the config has errors; nothing changed" "$T/s.log"
code=$(ns_https "$T/f4" "${AG[@]}" "$URL/v1/agent/files")
assert_eq "$code" 200 "a broken config on SIGHUP changes nothing"
assert_eq "$($CL field "$T/f4" version)" "$($CL field "$T/f2" version)" "same files after a failed reload"
cp "$T/config.good" "$T/config.yaml"
mv "$T/kek.key" "$T/kek.key.away" # the KEKs are reloaded too: one that cannot be read fails the reload
kill -HUP "$PID"
ns_wait_until 10 "a KEK that fails on SIGHUP is not reported" \
    grep -q "reload: the encryption keys cannot be loaded" "$T/s.log"
mv "$T/kek.key.away" "$T/kek.key"
code=$(ns_https "$T/f4" "${AG[@]}" "$URL/v1/agent/files")
assert_eq "$code" 200 "a failed KEK reload changes nothing"
write_config "      - {path: /etc/extra.key, secret: extra.key, format: raw, mode: \"0400\"}"
kill -HUP "$PID"
ok=
for i in $(seq 1 20); do
    ns_https "$T/f5" "${AG[@]}" "$URL/v1/agent/files" >/dev/null
    if grep -q '/etc/extra.key' "$T/f5"; then
        ok=1
        break
    fi
    sleep 0.25
done
[ -n "$ok" ] || fail "SIGHUP did not reload the templates"
assert_contains "$T/s.log" "reload: templates and encryption keys reloaded" "reload logged"
kill -0 "$PID" || fail "the server died on SIGHUP"

# ---- SIGTERM drains ----
# 1 s: header_timeout (2s) is a deadline from accept, the TLS handshake included (doc/server.md, "Limits").
$SLOW trickle "$PORT" "$T/ca.pem" 1 >"$T/inflight.out" 2>"$T/inflight.err" &
INFL=$!
# SIGTERM once the request is under way (a fixed sleep lost the race on a loaded machine under ASan)
for i in $(seq 1 100); do
    grep -q connected "$T/inflight.err" 2>/dev/null && break
    sleep 0.05
done
assert_contains "$T/inflight.err" connected "the in-flight client connected"
kill -TERM "$PID"
wait "$INFL"
assert_eq "$(cat "$T/inflight.out")" "HTTP/1.1 200 OK" "the in-flight request finished after SIGTERM"
NS_RC=0
wait "$PID" || NS_RC=$?
assert_eq "$NS_RC" 0 "exit status after SIGTERM"
code=$(curl -sk -o /dev/null -w '%{http_code}' "$URL/health" || true)
assert_eq "$code" 000 "nothing listens after exit"
echo "PASS"
