#!/usr/bin/env bash
# Covers: a running nstance-secretsd whose KEK (aes-gcm) and CA key (P-256) live in one SoftHSM token reached
# through the fault-injecting module (tests/tools/faulty-pkcs11.c), under continuous load for the whole test
# (srvclient.py load: GET /v1/agent/files, POST /v1/agent/renew, GET /health with an agent enrolled by the agent
# binary). For each fault kind — the token removed (`remove 60`, ended by clearing the rule when the checks are
# done: a timed end raced the checks on a loaded machine), and C_Sign and C_Decrypt failing with
# CKR_DEVICE_ERROR, CKR_SESSION_HANDLE_INVALID, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT and
# CKR_USER_NOT_LOGGED_IN — while the fault lasts: renew and register (the CA key signs in the token) get 503
# with the JSON error "unavailable" and no certificate, /health answers 200, files are still served from the
# cache, a `secret rotate` made during the fault is not served (its KEK unwrap fails), the server process is
# the same; after the fault: renew, a registration with the nonce refused during the fault (not used up) and
# the rotated secret (the KEK unwraps again) all work within RECOVERY_MAX seconds (the times are printed).
# Three removal cycles: the session report's `open` and `max` stay within pkcs11.sessions + server.threads + 1
# and do not grow cycle over cycle, sessions are reopened each time. A garbage signature from C_Sign during a
# registration: 503, no certificate, counted in /metrics as a token error, and the nonce still registers after.
# The load never saw a dropped connection, a 200 renew without a certificate, an error without a JSON code, or
# a status other than 200/503. SIGTERM: exit 0, the module finalised with no session open.
# While removed, recovery attempts (one "no token matching" line each) come at most every 250 ms, not per request.
# Regression: a fault that outlasted the token layer's retry left its session pooled with the operation still
# active, so the server answered 503 (CKR_OPERATION_ACTIVE) after the token was back; this test failed then.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need curl openssl python3
ns_need_py cryptography
AGENT=$top_builddir/nstance-secrets-agent
[ -x "$AGENT" ] || {
    echo "nstance-secrets-agent is not built"
    exit 99
}
ns_faulty_module
CL="python3 $top_srcdir/tests/tools/srvclient.py"
SESSIONS=2
THREADS=2
SESSION_BOUND=$((SESSIONS + THREADS + 1)) # new pool sessions + old ones still borrowed by workers and the refresher
RECOVERY_MAX=10                           # seconds from the end of a fault until requests succeed again

PIN=stf-8642
ns_token t1 "$PIN"
# The CLI uses SoftHSM directly: the faults, the fault log and the session report are the server's alone.
REAL_Q="module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-t1"
Q="module-path=$FAULTY_MODULE&pin-source=file:$T/pin-t1"
expect_rc 0 kek generate --uri "pkcs11:token=t1;object=kek?$REAL_Q" --mechanism aes-gcm
write_config() { # FILE QUERY
    cat >"$1" <<EOF
cluster_id: tokfaults
storage: {backend: file, path: $T/bucket}
encryption_key: {source: pkcs11, uri: "pkcs11:token=t1;object=kek?$2", mechanism: aes-gcm}
cache_dir: $T/cache
shard: s1
ca:
  keys: ["pkcs11:token=t1;object=ca;type=private?$2"]
pkcs11: {sessions: $SESSIONS}
server:
  listen: "127.0.0.1:0"
  cache_check: 1s
  threads: $THREADS
  renew_min_interval: 0s
groups: {cp: control-plane}
templates:
  control-plane:
    files:
      - {path: /etc/kubernetes/pki/sa.key, secret: k8s-sa.key, format: pem-bundle, mode: "0600"}
      - {path: /etc/nstance/ca.crt, ca_bundle: true, mode: "0644"}
EOF
}
write_config "$T/config.yaml" "$REAL_Q"
write_config "$T/server.yaml" "$Q"
expect_rc 0 ca init --key "pkcs11:token=t1;object=ca;type=private?$REAL_Q" --type ecdsa-p256
expect_rc 0 secret create registration-nonce.key --type ed25519
expect_rc 0 secret create k8s-sa.key --type ed25519
expect_rc 0 ca bundle -o "$T/ca.pem"

# From here on the CLI uses a copy of the token folder (the same token: same keys, label and serial, as the
# members of an HSM cluster share them), the server the original. SoftHSM rewrites a token's file at every
# login, and the server logs in again after each fault while the CLI runs: two processes on one SoftHSM
# folder can then see the token vanish for an instant ("no token matching", seen once in CI). That is a
# SoftHSM artefact of sharing a folder, not what this test is about.
cp -a "$T/tokens" "$T/tokens-cli"
sed "s|^directories.tokendir = .*|directories.tokendir = $T/tokens-cli|" "$T/softhsm2.conf" >"$T/softhsm2-cli.conf"
ns_server_start s "$T/server.yaml"
export SOFTHSM2_CONF=$T/softhsm2-cli.conf
PORT=$SRV_PORT
PID=$SRV_PID
ns_server_ready "$PORT"
URL=https://127.0.0.1:$PORT
nonce() { # SUB FILE
    expect_rc 0 nonce issue --kind agent --sub "$1" --tenant acme --shard s1 --group cp
    cp "$T/out" "$2"
}

# ---- an agent enrolled by the agent binary; its identity drives the load ----
nonce vm-load "$T/nonce-load"
"$AGENT" enroll --server "$URL" --ca "$T/ca.pem" --nonce-file "$T/nonce-load" --dir "$T/a1" \
    >"$T/aout" 2>"$T/aerr" || fail "agent enroll: $(cat "$T/aerr")"
AG=(--cert "$T/a1/identity.crt" --key "$T/a1/identity.key")
$CL load "$PORT" "$T/ca.pem" "$T/a1/identity.crt" "$T/a1/identity.key" "$T/load.log" "$T/load.stop" &
LOAD=$!
ns_bg_pid "$LOAD"

renew() { # prints the status; the answer in $T/renew.json
    ns_https "$T/renew.json" "${AG[@]}" -H 'Content-Type: application/json' --data-binary '{}' "$URL/v1/agent/renew"
}
files_version() { # prints the files version ("" unless 200)
    local code
    code=$(ns_https "$T/files.json" "${AG[@]}" "$URL/v1/agent/files")
    [ "$code" = 200 ] && $CL field "$T/files.json" version
    return 0
}
same_server() {
    kill -0 "$PID" 2>/dev/null || fail "$1: the server died"
    assert_eq "$(grep -c 'listening on' "$T/s.log")" 1 "$1: the server started once (no restart)"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
token_errors() {
    ns_https "$T/metrics" "$URL/metrics" >/dev/null
    sed -n 's/^nstance_token_errors_total \([0-9][0-9]*\)$/\1/p' "$T/metrics"
}
for i in $(seq 1 50); do
    [ "$(renew)" = 200 ] && break
    sleep 0.1
done
assert_eq "$(renew)" 200 "renew before any fault"
V=$(files_version)
[ -n "$V" ] || fail "files before any fault"

# during LABEL N: the checks while the fault lasts (N numbers the names; the nonce $T/nonce-N is issued before
# the fault).
during() {
    local label=$1 n=$2 code t_rot
    expect_rc 0 secret rotate k8s-sa.key # the server's cache refresh cannot unwrap it during the fault
    t_rot=$(now_ms)
    code=$(renew)
    assert_eq "$code" 503 "$label: renew while the token fails"
    assert_eq "$($CL field "$T/renew.json" error)" unavailable "$label: renew error code"
    code=$(ns_server_register "$PORT" "r$n" "$(cat "$T/nonce-$n")")
    assert_eq "$code" 503 "$label: register while the token fails"
    assert_eq "$($CL field "$T/r$n.json" error)" unavailable "$label: register error code"
    [ ! -e "$T/r$n.crt" ] || fail "$label: a certificate was issued during the fault"
    assert_eq "$(ns_https "$T/h" "$URL/health")" 200 "$label: /health during the fault"
    while [ "$(now_ms)" -lt $((t_rot + 1200)) ]; do # one server.cache_check: the refresh tries the rotation
        sleep 0.05
    done
    assert_eq "$(files_version)" "$V" "$label: files from the cache, without the rotation, during the fault"
    same_server "$label"
}

# after LABEL N END_MS: poll until renew, the held-back registration and the rotated secret work; record times.
after() {
    local label=$1 n=$2 end=$3 deadline t_sign= t_kek= v
    deadline=$((end + RECOVERY_MAX * 1000))
    while [ "$(now_ms)" -lt "$deadline" ]; do
        if [ -z "$t_sign" ] && [ "$(renew)" = 200 ]; then
            t_sign=$(($(now_ms) - end))
        fi
        if [ -z "$t_kek" ]; then
            v=$(files_version)
            if [ -n "$v" ] && [ "$v" != "$V" ]; then
                t_kek=$(($(now_ms) - end))
                V=$v
            fi
        fi
        [ -n "$t_sign" ] && [ -n "$t_kek" ] && break
        sleep 0.1
    done
    [ -n "$t_sign" ] || fail "$label: renew did not work again within $RECOVERY_MAX s of the fault's end ($(renew))"
    [ -n "$t_kek" ] || fail "$label: the rotated secret was not served within $RECOVERY_MAX s of the fault's end"
    assert_eq "$(ns_server_register "$PORT" "r$n" "$(cat "$T/nonce-$n")")" 200 \
        "$label: the nonce refused during the fault registers after it"
    openssl verify -CAfile "$T/ca.pem" "$T/r$n.crt" >/dev/null 2>&1 || fail "$label: the certificate does not verify"
    same_server "$label"
    echo "# recovery after $label: signing ${t_sign} ms, KEK (rotated secret served) ${t_kek} ms"
    echo "$label $t_sign $t_kek" >>"$T/recovery"
}

sessions_check() { # LABEL
    local open max
    open=$(ns_sessions open)
    max=$(ns_sessions max)
    echo "# sessions after $1: $(tr '\n' ' ' <"$FAULTY_PKCS11_SESSIONS")"
    [ "$open" -le "$SESSIONS" ] || fail "$1: $open sessions open after recovery (pkcs11.sessions $SESSIONS)"
    [ "$max" -le "$SESSION_BOUND" ] || fail "$1: up to $max sessions open at once (bound $SESSION_BOUND)"
}

n=0
# ---- the token removed: three cycles; sessions stay bounded ----
prev_opened=$(ns_sessions opened)
removed_ms=0
for cycle in 1 2 3; do
    n=$((n + 1))
    nonce "vm-$n" "$T/nonce-$n"
    t_rm=$(now_ms)
    ns_fault "remove 60" # ended by clearing the rule once the checks are done, however long they took
    during "removal $cycle" "$n"
    ns_fault_fired "token removed"
    ns_fault_clear
    removed_ms=$((removed_ms + $(now_ms) - t_rm))
    after "removal $cycle" "$n" "$(now_ms)"
    sessions_check "removal $cycle"
    opened=$(ns_sessions opened)
    [ "$opened" -gt "$prev_opened" ] || fail "removal $cycle: no session was reopened"
    prev_opened=$opened
    eval "max_$cycle=$(ns_sessions max)"
done
# shellcheck disable=SC2154
[ "$max_3" -le "$max_1" ] || [ "$max_3" -le "$SESSIONS" ] ||
    fail "the session high-water mark grew over removal cycles ($max_1 -> $max_3)"
# While the token is gone, the token layer tries to find it again at most every 250 ms (NS_P11_RECOVER_BACKOFF_MS),
# not once per request: each attempt logs one "no token matching" line (it was one per request, ~300 here).
# The back-off is per token handle, and this server holds two on the token (the KEK's, used by the cache
# refresh, and the CA signer's, used by renewals): up to two attempts per 250 ms. (The bound was one per
# 250 ms, and failed on a loaded machine at 4.4-4.6 attempts a second, as the two handles' attempts add up.)
scans=$(grep -c "no token matching" "$T/s.log" || true)
echo "# recovery attempts while removed: $scans in $removed_ms ms (load requests kept coming)"
[ "$scans" -ge 3 ] || fail "no recovery attempt logged during the removals"
[ "$scans" -le $((2 * removed_ms / 250 + 3 * 3)) ] ||
    fail "$scans recovery attempts in $removed_ms ms of removal: the back-off (250 ms) is not applied"

# ---- CK_RVs on the calls the server makes with its keys ----
for rv in CKR_DEVICE_ERROR CKR_SESSION_HANDLE_INVALID CKR_DEVICE_REMOVED CKR_TOKEN_NOT_PRESENT CKR_USER_NOT_LOGGED_IN; do
    n=$((n + 1))
    nonce "vm-$n" "$T/nonce-$n"
    ns_fault "fail C_Sign $rv" "fail C_Decrypt $rv"
    during "$rv" "$n"
    cp "$FAULTY_PKCS11_LOG" "$T/fired"
    ns_fault_clear
    after "$rv" "$n" "$(now_ms)"
    assert_contains "$T/fired" "C_Sign $rv" "the fault 'C_Sign $rv' was injected"
    assert_contains "$T/fired" "C_Decrypt $rv" "the fault 'C_Decrypt $rv' was injected"
    sessions_check "$rv"
done
assert_contains "$T/s.log" "reopening sessions and retrying once" "the token layer's retry is logged"
if grep -v '^nstance-secretsd: ' "$T/s.log" | grep -q .; then
    grep -v '^nstance-secretsd: ' "$T/s.log" | head -3 >&2
    fail "a server log line that does not name nstance-secretsd"
fi

# ---- a garbage signature during a registration ----
e0=$(token_errors)
n=$((n + 1))
nonce "vm-$n" "$T/nonce-$n"
ns_fault "corrupt C_Sign"
code=$(ns_server_register "$PORT" "r$n" "$(cat "$T/nonce-$n")")
assert_eq "$code" 503 "register with a garbage signature"
assert_eq "$($CL field "$T/r$n.json" error)" unavailable "garbage signature: error code"
[ ! -e "$T/r$n.crt" ] || fail "a certificate with a garbage signature was handed out"
grep -q 'BEGIN CERTIFICATE' "$T/r$n.json" && fail "the answer carries a certificate"
ns_fault_fired "C_Sign corrupt"
ns_fault_clear
e1=$(token_errors)
[ "$e1" -gt "$e0" ] || fail "/metrics did not count the garbage signature as a token error ($e0 -> $e1)"
assert_contains "$T/s.log" "does not verify" "the bad signature is logged"
assert_eq "$(ns_server_register "$PORT" "r$n" "$(cat "$T/nonce-$n")")" 200 "the nonce registers after the garbage"
openssl verify -CAfile "$T/ca.pem" "$T/r$n.crt" >/dev/null 2>&1 || fail "certificate after the garbage signature"

# ---- the agent syncs the last rotation ----
mkdir -p "$T/root"
"$AGENT" sync --server "$URL" --dir "$T/a1" --root "$T/root" >"$T/aout" 2>"$T/aerr" || fail "agent sync: $(cat "$T/aerr")"
expect_rc 0 secret export k8s-sa.key --format pem-bundle -o "$T/exp.pem"
cmp -s "$T/exp.pem" "$T/root/etc/kubernetes/pki/sa.key" || fail "the agent did not get the last rotation"

# ---- the load: what it saw ----
touch "$T/load.stop"
wait "$LOAD" || fail "the load generator failed"
summary=$(awk '{c[$2" "$3]++} END {for (k in c) print k, c[k]}' "$T/load.log" | sort | tr '\n' ',')
echo "# load (endpoint status count): $summary"
bad=$(awk '!(($2 == "health" && $3 == 200) || ($2 == "files" && $3 == 200) || ($2 == "renew" && ($3 == 200 || $3 == 503)))' "$T/load.log" | head -n 5)
[ -z "$bad" ] || fail "the load saw answers other than expected: $bad"
[ "$(awk '$2 == "renew" && $3 == 503' "$T/load.log" | wc -l)" -ge 9 ] || fail "the load's renewals did not meet the faults"
[ "$(awk '$2 == "renew" && $3 == 200' "$T/load.log" | wc -l)" -ge 9 ] || fail "the load's renewals did not succeed between the faults"
assert_eq "$(awk '$2 == "renew" {s = $3} END {print s}' "$T/load.log")" 200 "the load's last renewal"

# ---- SIGTERM: finalised, nothing open ----
same_server "end"
ns_server_stop "$PID"
assert_eq "$NS_RC" 0 "exit status after SIGTERM"
ns_assert_no_session_leak
echo "# recovery times (fault signing-ms kek-ms):"
sed 's/^/#   /' "$T/recovery"
echo PASS
