#!/usr/bin/env bash
# Covers: rewrap on Ceph RGW survives kill -9 and the gateway going away, and resumes.
#
# In detail: a private radosgw (tests/tools/ceph-rgw.sh rgw) against the shared cluster (or the test's own
# cluster), so that stopping it disturbs no other test. 600 blobs written under KEK A by ns-fill; then with
# B primary and A old: `rewrap --jobs 4` killed with SIGKILL after 0.5 s — every blob still opens (ns-fill
# --check); `rewrap --jobs 1` while the gateway is stopped under it — exit 6 naming the storage error, and
# again every blob opens once a new gateway is up; the final rewrap reports 0 failed, a second one has
# nothing to do, and verify with B alone passes for all 600.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
ns_rgw_start nstance-faults
[ -n "$RGW_DIR" ] || fail "no cluster folder for a private gateway (NS_RGW_DIR unset with NS_RGW_ENDPOINT)"
GW=faults$$
CEPH_RGW=$top_srcdir/tests/tools/ceph-rgw.sh
gw_start() {
    GW_EP=$(bash "$CEPH_RGW" rgw "$RGW_DIR" "$GW") || fail "private radosgw $GW did not start"
    echo "# private radosgw $GW on $GW_EP"
}
gw_stop() {
    bash "$CEPH_RGW" stop-rgw "$RGW_DIR" "$GW"
}
trap 'gw_stop; _ns_cleanup' EXIT
gw_start

head -c 32 /dev/urandom >"$T/kek-a"
head -c 32 /dev/urandom >"$T/kek-b"
chmod 600 "$T/kek-a" "$T/kek-b"
KA="{source: file, path: $T/kek-a}"
KB="{source: file, path: $T/kek-b}"
cfg() {
    {
        printf 'cluster_id: rgwfaults\nstorage:\n  backend: s3\n  bucket: %s\n' "$RGW_BUCKET"
        printf '  endpoint: %s\n  path_style: true\n' "$GW_EP"
        printf '  retries: {max: 1, base_delay_ms: 10}\n  timeouts: {connect_ms: 1000, request_ms: 10000}\n'
        printf '  credentials: {access_key_id: %s, secret_access_key: %s}\n' "$S3_AK" "$S3_SK"
        printf 'encryption_key: %s\n' "$1"
        [ -z "${2:-}" ] || printf 'old_encryption_keys:\n  - %s\n' "$2"
    } >"$T/config.yaml"
}
N=600
check_all() {
    "$top_builddir/tests/tools/ns-fill" -c "$T/config.yaml" --check "$T/fill" -j 2 >"$T/check" 2>"$T/check.err" ||
        { cat "$T/check.err" >&2; fail "$1: a blob does not open"; }
    assert_contains "$T/check" "checked $N" "$1: every blob opens"
}

cfg "$KA"
"$top_builddir/tests/tools/ns-fill" -c "$T/config.yaml" -n "$N" -p f/b -j 2 >"$T/fill" 2>"$T/fill.err" ||
    { cat "$T/fill.err" >&2; fail "ns-fill into RGW"; }
cfg "$KB" "$KA"

# ---- kill -9 during a rewrap ----
"$NS_CLI" -c "$T/config.yaml" rewrap --jobs 4 >"$T/rw1.out" 2>"$T/rw1.err" &
pid=$!
sleep 0.5
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
check_all "after kill -9"

# ---- the gateway stops during a rewrap ----
"$NS_CLI" -c "$T/config.yaml" rewrap --jobs 1 >"$T/rw2.out" 2>"$T/rw2.err" &
pid=$!
sleep 1
gw_stop
rc=0
wait "$pid" || rc=$?
tail -n 3 "$T/rw2.out" "$T/rw2.err"
if [ "$rc" = 0 ]; then
    fail "the rewrap finished before the gateway stopped: the test proved nothing"
fi
assert_eq "$rc" 6 "rewrap with the gateway gone: storage error"
assert_contains "$T/rw2.err" "storage" "the error names storage"
gw_start
cfg "$KB" "$KA"
check_all "after the gateway came back"

# ---- resume ----
expect_rc 0 rewrap --jobs 4
if ! grep -Eq "^rewrap: $N blobs, [0-9]+ re-wrapped, [0-9]+ already under the primary key, 0 failed\$" "$T/out"; then
    cat "$T/out" >&2
    fail "the resumed rewrap: unexpected summary"
fi
expect_rc 0 rewrap
assert_contains "$T/out" "rewrap: $N blobs, 0 re-wrapped, $N already under the primary key, 0 failed" \
    "a second rewrap has nothing to do"
cfg "$KB"
expect_rc 0 verify
assert_contains "$T/out" "verified $N blobs: $N ok, 0 failed" "verify under B alone"
check_all "under B alone"
echo "PASS"
