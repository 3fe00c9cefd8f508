#!/usr/bin/env bash
# Covers: the s3 backend against tests/tools/http-fault-server.py, which checks every request's SigV4
# signature with botocore and implements conditional writes: signatures match botocore's (path-style,
# virtual-hosted, temporary IMDS credentials); put --create on an existing name is exit 7 and changes
# nothing; secret rotate sends If-Match with the ETag it read and survives a lost compare-and-swap (412);
# If-Match against a server that wants the bare ETag (Ceph RGW before 2025: one quoted 412, a HEAD, the bare
# form accepted and kept) and one that strips quotes (AWS); a CAS race of 4 writers has exactly one winner
# with every If-Match behaviour;
# 5xx/429 are retried and succeed; retries are bounded (exactly 1 + max attempts) and end in exit 6 naming
# bucket, key, status and S3's error Code; a slow server hits the request timeout; XML error bodies are
# reported; a wrong secret is SignatureDoesNotMatch (6); a malformed list answer is a storage error;
# ListObjectsV2 pages with continuation tokens; credentials from IMDSv2.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
ns_need python3
ns_need_py botocore

python3 "$top_srcdir/tests/tools/http-fault-server.py" --port-file "$T/fport" 2>"$T/fault.err" &
ns_bg_pid $!
for _ in $(seq 1 100); do
    [ -s "$T/fport" ] && break
    sleep 0.1
done
[ -s "$T/fport" ] || { cat "$T/fault.err" >&2; fail "the fault server did not start"; }
PORT=$(cat "$T/fport")
CTL=http://127.0.0.1:$PORT/__control
echo "# fault server on port $PORT"

unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE AWS_SHARED_CREDENTIALS_FILE
export HOME=$T AWS_EC2_METADATA_DISABLED=true

head -c 32 /dev/urandom >"$T/kek"
chmod 600 "$T/kek"

# fcfg ENDPOINT PATH_STYLE [CREDENTIALS]: the config.
DEFAULT_CREDS="{access_key_id: AKIDFAULTSERVER1, secret_access_key: 'fault-secret/with+chars'}"
fcfg() {
    local creds=${3:-$DEFAULT_CREDS}
    {
        printf 'cluster_id: faults\nstorage:\n  backend: s3\n  bucket: fault-bucket\n  prefix: p1\n'
        printf '  endpoint: %s\n  path_style: %s\n' "$1" "$2"
        printf '  timeouts: {connect_ms: 1000, request_ms: 600}\n  retries: {max: 2, base_delay_ms: 10}\n'
        printf '  credentials: %s\n' "$creds"
        printf 'encryption_key: {source: file, path: %s}\n' "$T/kek"
    } >"$T/config.yaml"
}
ctl() { curl -sS --max-time 5 -X POST --data-binary "$2" "$CTL/$1" >/dev/null; }
log_reset() { ctl reset ''; }
fetch_log() { curl -sS --max-time 5 "$CTL/log" >"$T/log"; }
# count METHOD [SIG]: requests of the log with that method (and signature verdict)
count() { python3 -c 'import json,sys
n=0
for l in open(sys.argv[1]):
    e=json.loads(l)
    if e["method"]==sys.argv[2] and (len(sys.argv)<4 or e["signature"]==sys.argv[3]): n+=1
print(n)' "$T/log" "$@"; }
all_signed_ok() {
    fetch_log
    if grep -v '"signature": "ok"' "$T/log" | grep -q .; then
        cat "$T/log" >&2
        fail "$1: a request's signature did not match botocore's"
    fi
}

fcfg "http://127.0.0.1:$PORT" true
printf 'first\n' >"$T/v1"
printf 'second\n' >"$T/v2"

# ---- signatures, round trip, path-style ----
expect_rc 0 put a/one "$T/v1"
expect_rc 0 get a/one
cmp "$T/out" "$T/v1" || fail "get a/one: content differs"
expect_rc 0 list
assert_eq "$(cat "$T/out")" "a/one" "list"
all_signed_ok "path-style"
assert_contains "$T/log" "\"/fault-bucket/p1/cluster/secret/a/one\"" "path-style URL"

# ---- conditional writes ----
expect_rc 7 put a/one --create <"$T/v2"
expect_rc 0 get a/one
cmp "$T/out" "$T/v1" || fail "put --create over an existing name changed it"
fetch_log
python3 -c 'import json,sys
e=[json.loads(l) for l in open(sys.argv[1])]
assert any(x["method"]=="PUT" and x["if_none_match"]=="*" and x["status"]==412 for x in e), e' "$T/log" ||
    fail "put --create did not send If-None-Match: * (or was not refused)"
expect_rc 0 put a/two --create <"$T/v2"

expect_rc 0 secret create s/k --type random --bytes 16
log_reset
expect_rc 0 secret create s/k --type random --bytes 16
# (reset dropped the objects: that create made it again; now rotate with one lost compare-and-swap)
ctl queue '[{"method": "PUT", "status": 412, "body": "<Error><Code>PreconditionFailed</Code></Error>"}]'
expect_rc 0 secret rotate s/k
fetch_log
python3 -c 'import json,sys
e=[json.loads(l) for l in open(sys.argv[1])]
puts=[x for x in e if x["method"]=="PUT" and x["if_match"]]
# the 412 (not a change: the ETag is the same) is tried once with the bare ETag, which this server refuses
# (it wants the quoted form), so the CAS is lost; the rotate re-reads and wins with the quoted form again
assert len(puts)==3, e
assert puts[0]["status"]==412 and puts[0]["if_match"].startswith("\""), puts
assert puts[1]["status"]==412 and not puts[1]["if_match"].startswith("\""), puts
assert puts[2]["status"]==200 and puts[2]["if_match"].startswith("\""), puts' "$T/log" ||
    { cat "$T/log" >&2; fail "secret rotate: If-Match with the ETag, retried after a 412"; }
expect_rc 0 secret show s/k
assert_contains "$T/out" "keys: 2" "rotate after a lost compare-and-swap: two keys"

# ---- If-Match forms (doc/storage-s3.md): RGW before 2025 wants the bare ETag, AWS either ----
ctl etag-mode bare
log_reset
expect_rc 0 secret create q/k --type random --bytes 16
expect_rc 0 secret rotate q/k --pending
expect_rc 0 secret promote q/k
fetch_log
python3 -c 'import json,sys
e=[json.loads(l) for l in open(sys.argv[1])]
puts=[x for x in e if x["method"]=="PUT" and x["if_match"]]
# learned per process (rotate, then promote): each starts quoted, gets 412, HEADs, and goes bare
assert len(puts)==4, e
for k in (0, 2):
    assert puts[k]["status"]==412 and puts[k]["if_match"].startswith("\""), puts
    assert puts[k+1]["status"]==200 and puts[k+1]["if_match"]==puts[k]["if_match"].strip("\""), puts
    i=e.index(puts[k])
    assert e[i+1]["method"]=="HEAD" and e[i+2] is puts[k+1], e' "$T/log" ||
    { cat "$T/log" >&2; fail "bare If-Match: a 412 with an unchanged ETag retried once bare"; }
expect_rc 0 secret show q/k
assert_contains "$T/out" "keys: 2" "rotate + promote against a bare-If-Match server"
# a real race is still a conflict for all but one writer, with either server behaviour
expect_rc 0 put race/x "$T/v1"
for mode in bare aws exact; do
    ctl etag-mode "$mode"
    "$top_builddir/tests/tools/ns-fill" -c "$T/config.yaml" --race race/x -j 4 >"$T/race" 2>"$T/race.err" ||
        { cat "$T/race" "$T/race.err" >&2; fail "CAS race ($mode If-Match)"; }
    assert_contains "$T/race" "race: 1 won, 3 conflict, 0 other" "CAS race ($mode If-Match)"
done
ctl etag-mode aws
log_reset
expect_rc 0 secret create q/a --type random --bytes 16
expect_rc 0 secret rotate q/a
fetch_log
python3 -c 'import json,sys
e=[json.loads(l) for l in open(sys.argv[1])]
puts=[x for x in e if x["method"]=="PUT" and x["if_match"]]
assert len(puts)==1 and puts[0]["status"]==200 and puts[0]["if_match"].startswith("\""), e' "$T/log" ||
    { cat "$T/log" >&2; fail "AWS-like If-Match: one quoted PUT"; }
ctl etag-mode exact

# ---- retries ----
log_reset
expect_rc 0 put r/x "$T/v1"
fetch_log
gets_put=$(count GET) # put reads the name first (a typed secret is not replaced)
ctl queue '[{"status": 503, "body": "<Error><Code>SlowDown</Code></Error>"}, {"status": 429}]'
expect_rc 0 get r/x
cmp "$T/out" "$T/v1" || fail "get after 503 and 429: content differs"
fetch_log
assert_eq "$(($(count GET) - gets_put))" 3 "503, 429, then the answer: three GETs"

ctl queue '[{"status": 500, "body": "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"}, {"status": 500, "body": "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"}, {"status": 500, "body": "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"}, {"status": 200, "body": "never reached"}]'
log_reset_before=$(curl -sS "$CTL/log" | wc -l)
expect_rc 6 get r/x
assert_contains "$T/err" "bucket 'fault-bucket' key 'p1/cluster/secret/r/x': HTTP 500 InternalError (We encountered an internal error.)" "exhausted retries: bucket, key, status, code, message"
fetch_log
assert_eq "$(($(wc -l <"$T/log") - log_reset_before))" 3 "exactly 1 + retries.max attempts"
ctl reset ''
expect_rc 0 put r/x "$T/v1" # drains the one entry left ("never reached" would answer this otherwise)
fetch_log
ctl reset ''

# ---- timeouts ----
expect_rc 0 put t/x "$T/v1"
ctl queue '[{"method": "GET", "delay": 3}, {"method": "GET", "delay": 3}, {"method": "GET", "delay": 3}]'
start=$(date +%s%N)
expect_rc 6 get t/x
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
assert_contains "$T/err" "timed out" "a slow server: the timeout is reported"
[ "$elapsed_ms" -lt 2900 ] || fail "three attempts of 600 ms took ${elapsed_ms} ms"
sleep 3 # let the server's sleeping handlers finish before the next steps

# ---- error bodies ----
ctl reset ''
ctl queue '[{"method": "GET", "status": 403, "body": "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access &amp; Denied</Message></Error>"}]'
expect_rc 6 get e/x
assert_contains "$T/err" "HTTP 403 AccessDenied (Access & Denied)" "an XML error body: code and message"
ctl queue '[{"method": "GET", "status": 200, "body": "<ListBucketResult><Contents><Key>p1/cluster/secret/x</Contents></ListBucketResult>"}]'
expect_rc 6 list
assert_contains "$T/err" "malformed ListObjectsV2 answer" "a malformed list answer"

# ---- a wrong secret ----
fcfg "http://127.0.0.1:$PORT" true "{access_key_id: AKIDFAULTSERVER1, secret_access_key: wrong-secret}"
expect_rc 6 get a/one
assert_contains "$T/err" "SignatureDoesNotMatch" "a wrong secret is refused by the signature check"
assert_not_contains "$T/err" "wrong-secret" "the secret is never printed"

# ---- pages ----
fcfg "http://127.0.0.1:$PORT" true
ctl reset ''
"$top_builddir/tests/tools/ns-fill" -c "$T/config.yaml" -n 2345 -p pg/ -j 2 >"$T/fill" 2>"$T/fill.err" ||
    { cat "$T/fill.err" >&2; fail "ns-fill"; }
log_reset_before=$(curl -sS "$CTL/log" | wc -l)
expect_rc 0 list pg/
assert_eq "$(wc -l <"$T/out")" 2345 "list across three pages"
fetch_log
assert_eq "$(($(wc -l <"$T/log") - log_reset_before))" 3 "three ListObjectsV2 pages"
grep -q 'continuation-token=' "$T/log" || fail "no continuation token sent"
all_signed_ok "list pages"

# ---- virtual-hosted addressing ----
ctl reset ''
fcfg "http://localhost:$PORT" false
expect_rc 0 put v/h "$T/v2"
expect_rc 0 get v/h
cmp "$T/out" "$T/v2" || fail "virtual-hosted: content differs"
expect_rc 0 list
assert_eq "$(cat "$T/out")" "v/h" "virtual-hosted list"
all_signed_ok "virtual-hosted"
assert_contains "$T/log" "\"host\": \"fault-bucket.localhost:$PORT\"" "virtual-hosted: the bucket is in Host"
assert_contains "$T/log" "\"path\": \"/p1/cluster/secret/v/h\"" "virtual-hosted: the key is the path"

# ---- IMDSv2 credentials (with a session token) ----
ctl reset ''
unset AWS_EC2_METADATA_DISABLED
fcfg "http://127.0.0.1:$PORT" true "{imds_endpoint: 'http://127.0.0.1:$PORT'}"
expect_rc 0 -v -v put i/x "$T/v1"
assert_contains "$T/err" "instance metadata role 'nstance-role'" "credentials came from IMDS"
assert_not_contains "$T/err" "imds-secret" "the IMDS secret is never printed"
assert_not_contains "$T/err" "imds-session-token" "the IMDS token is never printed"
expect_rc 0 get i/x
cmp "$T/out" "$T/v1" || fail "IMDS credentials: content differs"
all_signed_ok "IMDS credentials"
fcfg "http://127.0.0.1:$PORT" true "{imds: false}"
expect_rc 2 get i/x
assert_contains "$T/err" "instance metadata is disabled" "imds: false"
echo "PASS"
