#!/usr/bin/env bash
# Covers: token faults injected by tests/tools/faulty-pkcs11.c wrapped around SoftHSM: clean failures, recovery
# by the token layer's retry, garbage outputs caught, no session leak.
#
# In detail: (1) token unavailable — the token removed, or every call failing with CKR_DEVICE_ERROR: put, get,
# rewrap and `ca issue` exit 5, print nothing on stdout, and the bucket (blobs, certificate log) is byte for
# byte unchanged; (2) each transient CK_RV (CKR_DEVICE_ERROR, CKR_SESSION_HANDLE_INVALID, CKR_DEVICE_REMOVED,
# CKR_TOKEN_NOT_PRESENT, CKR_USER_NOT_LOGGED_IN) once on C_Decrypt (get), C_Encrypt (put) and C_Sign (ca issue)
# is recovered by the single retry (the fault is proven to have fired, the retry is logged), but the same fault
# twice in a row is not (exit 5: the retry is bounded); (3) latency on C_Decrypt slows get but it succeeds;
# (4) a garbage signature from C_Sign: `ca issue` exits 5, writes no certificate and logs nothing in the
# certificate log; a garbage C_Decrypt result (aes-gcm and rsa-oaep KEKs) and a garbage C_UnwrapKey result
# (aes-kwp): get exits 4 (integrity), never prints wrong plaintext; garbage at the rsa-oaep start-up probe
# refuses the KEK at start-up (5); (5) a long-running process
# (tests/tools/ns-token-loop) across a 1-second token removal and a burst of session faults: it fails while the
# token is gone, recovers after, never gets a wrong key, and ends with no session open and never more than
# pkcs11.sessions at once (the module's session report).
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
ns_faulty_module

PIN=flt-pin-1357
ns_token flt "$PIN"
REAL_Q="module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-flt"
Q="module-path=$FAULTY_MODULE&pin-source=file:$T/pin-flt"
for k in gcm:aes-gcm kwp:aes-kwp rsa:rsa-oaep; do
    expect_rc 0 kek generate --uri "pkcs11:token=flt;object=kek-${k%%:*}?$REAL_Q" --mechanism "${k#*:}"
done
B=$T/bucket
kek_config() { # MECH-SHORT MECH
    ns_config <<EOF
cluster_id: faults
storage: {backend: file, path: $B}
encryption_key: {source: pkcs11, uri: "pkcs11:token=flt;object=kek-$1?$Q", mechanism: $2}
shard: s1
ca:
  keys: ["pkcs11:token=flt;object=ca;type=private?$Q"]
  cert_ttl: 2h
pkcs11: {sessions: 2}
EOF
}
kek_config gcm aes-gcm
head -c 3000 /dev/urandom >"$T/plain"
expect_rc 0 put a "$T/plain"
ns_assert_no_session_leak
expect_rc 0 ca init --key "pkcs11:token=flt;object=ca;type=private?$Q" --type ecdsa-p256
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/leaf.key" 2>/dev/null
openssl pkey -in "$T/leaf.key" -pubout -out "$T/leaf.pub"
issue() { expect_rc "$1" ca issue --public-key "$T/leaf.pub" --cn vm-1 --tenant acme --role agent -o "$T/leaf.pem"; }
issue 0
snapshot() { (cd "$B" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

# ---- 1. token unavailable: exit 5, nothing written ----
for fault in "remove 60" "fail * CKR_DEVICE_ERROR"; do
    ns_fault "$fault"
    snapshot >"$T/before"
    rm -f "$T/leaf.pem"
    expect_rc 5 put b "$T/plain"
    [ ! -s "$T/out" ] || fail "put printed on stdout"
    expect_rc 5 put a "$T/plain"
    expect_rc 5 get a
    [ ! -s "$T/out" ] || fail "get printed on stdout"
    expect_rc 5 rewrap
    issue 5
    [ ! -e "$T/leaf.pem" ] || fail "ca issue wrote a certificate while the token was unavailable"
    snapshot >"$T/after"
    cmp -s "$T/before" "$T/after" || fail "'$fault' changed the bucket"
    case $fault in
    remove*) ns_fault_fired "token removed" ;;
    *) ns_fault_fired "CKR_DEVICE_ERROR" ;;
    esac
    ns_fault_clear
    expect_rc 0 get a -o "$T/got"
    cmp -s "$T/plain" "$T/got" || fail "get after '$fault' ended"
done

# ---- 2. transient faults: one retry recovers each; two in a row do not ----
for rv in CKR_DEVICE_ERROR CKR_SESSION_HANDLE_INVALID CKR_DEVICE_REMOVED CKR_TOKEN_NOT_PRESENT CKR_USER_NOT_LOGGED_IN; do
    ns_fault "fail C_Decrypt $rv count=1"
    expect_rc 0 get a -o "$T/got"
    cmp -s "$T/plain" "$T/got" || fail "get after one $rv"
    ns_fault_fired "C_Decrypt $rv"
    assert_contains "$T/err" "$rv; reopening sessions and retrying once"
    ns_assert_no_session_leak

    ns_fault "fail C_Encrypt $rv count=1"
    expect_rc 0 put "t-$rv" "$T/plain"
    ns_fault_fired "C_Encrypt $rv"
    ns_assert_no_session_leak

    ns_fault "fail C_Sign $rv count=1"
    issue 0
    ns_fault_fired "C_Sign $rv"
    ns_assert_no_session_leak

    ns_fault "fail C_Decrypt $rv count=2"
    expect_rc 5 get a
    assert_contains "$T/err" "$rv"
    ns_assert_no_session_leak
done
ns_fault_clear
expect_rc 0 get "t-CKR_USER_NOT_LOGGED_IN" -o "$T/got"
cmp -s "$T/plain" "$T/got" || fail "a blob written after a recovered fault"

# ---- 3. latency ----
ns_fault "delay C_Decrypt 400"
start=$(date +%s%N)
expect_rc 0 get a -o "$T/got"
elapsed=$((($(date +%s%N) - start) / 1000000))
[ "$elapsed" -ge 400 ] || fail "the delay did not apply ($elapsed ms)"
ns_fault_fired "C_Decrypt delay"
cmp -s "$T/plain" "$T/got" || fail "get with latency"

# ---- 4. garbage outputs ----
ns_fault "corrupt C_Sign"
snapshot >"$T/before"
rm -f "$T/leaf.pem"
issue 5
assert_contains "$T/err" "does not verify"
[ ! -e "$T/leaf.pem" ] || fail "a certificate with a garbage signature was written"
snapshot >"$T/after"
cmp -s "$T/before" "$T/after" || fail "a failed issuance changed the bucket (certificate log)"
ns_fault_fired "C_Sign corrupt"

# rsa-oaep: the start-up probe of the OAEP hash is the first C_Decrypt (garbage there is refused at start-up).
for k in gcm:aes-gcm:C_Decrypt:0 kwp:aes-kwp:C_UnwrapKey:0 rsa:rsa-oaep:C_Decrypt:1; do
    IFS=: read -r short mech fn after <<<"$k"
    ns_fault_clear
    kek_config "$short" "$mech"
    expect_rc 0 put "g-$short" "$T/plain"
    ns_fault "corrupt $fn after=$after"
    expect_rc 4 get "g-$short"
    [ ! -s "$T/out" ] || fail "$mech: a garbage unwrap printed plaintext"
    ns_fault_fired "$fn corrupt"
    ns_fault_clear
    expect_rc 0 get "g-$short" -o "$T/got"
    cmp -s "$T/plain" "$T/got" || fail "$mech: get after the corruption ended"
done
ns_fault "corrupt C_Decrypt"
expect_rc 5 get g-rsa
assert_contains "$T/err" "cannot decrypt RSA-OAEP" "garbage from the start-up probe is refused at start-up"
ns_fault_clear

# ---- 5. a long-running process across a removal and session faults: recovery, no leak ----
kek_config gcm aes-gcm
ns_fault_clear
"$top_builddir/tests/tools/ns-token-loop" "$T/config.yaml" 40 100 >"$T/loop.out" 2>"$T/loop.err" &
LOOP=$!
ns_bg_pid "$LOOP"
for i in $(seq 1 50); do
    grep -q "^3 ok" "$T/loop.out" && break
    sleep 0.1
done
grep -q "^3 ok" "$T/loop.out" || fail "ns-token-loop did not start: $(cat "$T/loop.out" "$T/loop.err")"
ns_fault "remove 1"
sleep 1.6
ns_fault "fail C_Decrypt CKR_SESSION_HANDLE_INVALID count=1" "fail C_DecryptInit CKR_DEVICE_ERROR count=1 after=3"
rc=0
wait "$LOOP" || rc=$?
cat "$T/loop.out" >&2
assert_eq "$rc" 0 "ns-token-loop exit (3 = a wrong DEK came back)"
assert_contains "$T/loop.out" "error token unavailable" "the loop saw the token gone"
tail -n 2 "$T/loop.out" | head -n 1 | grep -q "^40 ok$" || fail "the loop did not recover"
assert_contains "$T/loop.out" "wrong=0"
ns_fault_fired "C_DecryptInit CKR_DEVICE_ERROR"
ns_assert_no_session_leak
max=$(ns_sessions max)
[ "$max" -le 2 ] || fail "up to $max sessions open at once with pkcs11.sessions 2"
[ "$(ns_sessions opened)" -ge 3 ] || fail "sessions were not reopened after the faults"
echo PASS
