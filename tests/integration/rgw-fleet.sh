#!/usr/bin/env bash
# Covers: the server and an enrolled agent on the s3 backend against Ceph RGW, and two servers sharing the
# RGW bucket racing one nonce.
#
# In detail: the agent-lib.sh cluster (CA key in SoftHSM, nonce key, app.key, app.tok) with its store in an
# RGW bucket; nstance-secretsd on it; an agent enrolls (registration record in the bucket) and syncs: the
# token file equals `secret export app.tok --format raw`; `secret rotate app.tok` (a compare-and-swap on
# RGW) reaches the file on the next sync. A second server (own cache_dir) on the same bucket: five nonces,
# each sent to both servers at once, register exactly once (one 200, one 409); a nonce used on one server
# is refused by the other (409). `verify` of the bucket passes at the end.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
ns_need curl openssl python3
ns_need_py cryptography
ns_rgw_start nstance-fleet
AGENT_STORAGE="{backend: s3, bucket: $RGW_BUCKET, endpoint: '$S3_ENDPOINT', path_style: true, credentials: {access_key_id: $S3_AK, secret_access_key: $S3_SK}}"
. "$top_srcdir/tests/integration/agent-lib.sh"
agent_setup
agent_server_start
PA=$SRV_PORT
ROOT=$T/root
mkdir -p "$ROOT"
CL="python3 $top_srcdir/tests/tools/srvclient.py"

# ---- enroll and sync through a server on RGW ----
agent_nonce vm-1 web "$T/nonce-1"
agent_rc 0 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-1" --dir "$T/a1"
expect_rc 0 list
agent_rc 0 sync --server "$SRV_URL" --dir "$T/a1" --root "$ROOT"
expect_rc 0 secret export app.tok --format raw
cmp "$T/out" "$ROOT/etc/app/token" || fail "the synced token differs from secret export"
expect_rc 0 secret rotate app.tok
expect_rc 0 secret export app.tok --format raw
cp "$T/out" "$T/tok2"
for i in $(seq 1 50); do
    agent_rc 0 sync --server "$SRV_URL" --dir "$T/a1" --root "$ROOT"
    cmp -s "$T/tok2" "$ROOT/etc/app/token" && break
    sleep 0.2
done
cmp "$T/tok2" "$ROOT/etc/app/token" || fail "the rotated token did not reach the agent"

# ---- a second server on the same bucket: one nonce, two servers at once ----
sed "s|cache_dir: .*|cache_dir: $T/cache2|" "$T/config.yaml" >"$T/standby.yaml"
ns_server_start standby "$T/standby.yaml"
PB=$SRV_PORT
ns_server_ready "$PB"
for i in 1 2 3 4 5; do
    expect_rc 0 nonce issue --kind agent --sub "race-$i" --tenant acme --group web
    NR=$(cat "$T/out")
    openssl genpkey -algorithm ed25519 -out "$T/race.key" 2>/dev/null
    openssl pkey -in "$T/race.key" -pubout -out "$T/race.pub"
    $CL regbody "$NR" "$T/race.pub" >"$T/race.req"
    curl -s --cacert "$T/ca.crt" -o "$T/ra.json" -w '%{http_code}' --data-binary @"$T/race.req" \
        "https://127.0.0.1:$PA/v1/register" >"$T/ra.code" &
    p1=$!
    curl -s --cacert "$T/ca.crt" -o "$T/rb.json" -w '%{http_code}' --data-binary @"$T/race.req" \
        "https://127.0.0.1:$PB/v1/register" >"$T/rb.code" &
    p2=$!
    wait "$p1" "$p2" || true
    got=$(printf '%s\n%s\n' "$(cat "$T/ra.code")" "$(cat "$T/rb.code")" | sort | tr '\n' ' ')
    assert_eq "$got" "200 409 " "race $i: exactly one registration"
done
expect_rc 0 nonce issue --kind agent --sub once --tenant acme --group web
NR=$(cat "$T/out")
$CL regbody "$NR" "$T/race.pub" >"$T/once.req"
code=$(curl -s --cacert "$T/ca.crt" -o "$T/o1.json" -w '%{http_code}' --data-binary @"$T/once.req" \
    "https://127.0.0.1:$PB/v1/register")
assert_eq "$code" 200 "a nonce registers on the standby"
code=$(curl -s --cacert "$T/ca.crt" -o "$T/o2.json" -w '%{http_code}' --data-binary @"$T/once.req" \
    "https://127.0.0.1:$PA/v1/register")
assert_eq "$code" 409 "the same nonce on the other server"

expect_rc 0 verify
assert_contains "$T/out" ", 0 failed" "verify of the RGW bucket"
echo "PASS"
