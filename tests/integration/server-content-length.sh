#!/usr/bin/env bash
# Regression test for issue 12, item 11a: "libevent accepts two different Content-Length headers and
# Content-Length: +2". libevent 2.1.12 reads the first Content-Length with strtoll, so a second, different
# one, a sign, leading zeros or leading control characters passed, and the bytes after the body it chose
# were read as the next request (request smuggling behind a front end that chose otherwise). Now every such
# request is refused with 400 before our handler looks at it, logged as "refused bad_content_length 400
# PEER" and counted in nstance_http_refused_total{reason="bad_content_length"}, and its connection is
# closed (nothing after it is read as a request). Also refused: equal duplicates (our choice), a header name
# with a blank before the colon (RFC 9112 §5.1, "refused malformed 400"), and Content-Length together with
# Transfer-Encoding (RFC 9112 §6.1; libevent refuses that one itself, "refused malformed 400"). Still
# accepted: a plain length with blanks around it (RFC 9110 OWS).
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need curl openssl python3
SLOW="python3 $top_srcdir/tests/tools/slowclient.py"

ns_server_config "$T/config.yaml" "$T/cache"
expect_rc 0 ca init
expect_rc 0 secret create registration-nonce.key --type ed25519
expect_rc 0 ca bundle -o "$T/ca.pem"
ns_server_start s "$T/config.yaml"
PORT=$SRV_PORT
PID=$SRV_PID
ns_server_ready "$PORT"
URL=https://127.0.0.1:$PORT
LOG=$T/s.log

refused_count() {
    assert_eq "$(ns_https "$T/m" "$URL/metrics")" 200 "GET /metrics"
    sed -n "s/^nstance_http_refused_total{reason=\"$1\"} \([0-9]*\)$/\1/p" "$T/m"
}

# refused NAME STATUS_LINE: send stdin raw over TLS as one connection; exactly one answer, STATUS_LINE.
answers() {
    cat >"$T/$1.req"
    $SLOW send "$PORT" "$T/$1.req" >"$T/$1.out"
    if [ "$(cat "$T/$1.out")" != "$2" ]; then
        echo "--- request $1 ---" >&2
        head -c 400 "$T/$1.req" | cat -A >&2
        echo "--- answers ---" >&2
        cat "$T/$1.out" >&2
        fail "$1: expected only '$2'"
    fi
}
BAD="HTTP/1.1 400 Bad Request"
SMUGGLED='GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Smuggled: 1\r\n\r\n'

# Two different lengths, the first one short: libevent took 2, our handler answered POST /health (405) and
# the rest was served as a second request (404).
printf "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}$SMUGGLED" |
    answers two-lengths "$BAD"
# The same, the longer one first (its 40 bytes are sent): libevent took 40.
printf "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nContent-Length: 2\r\n\r\n%040d" 0 |
    answers two-lengths-long-first "$BAD"
printf 'POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}' | answers plus "$BAD"
printf 'POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: -0\r\n\r\n' | answers minus-zero "$BAD"
printf 'POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0002\r\n\r\n{}' | answers leading-zeros "$BAD"
printf 'POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: \v2\r\n\r\n{}' | answers vertical-tab "$BAD"
printf 'POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}' |
    answers equal-duplicates "$BAD"
N=7
for i in $(seq 1 50); do
    [ "$(grep -cE "^nstance-secretsd: refused bad_content_length 400 127\.0\.0\.1:[0-9]+$" "$LOG" || true)" -ge $N ] && break
    sleep 0.1
done
assert_eq "$(grep -cE "^nstance-secretsd: refused bad_content_length 400 127\.0\.0\.1:[0-9]+$" "$LOG" || true)" $N \
    "one 'refused bad_content_length 400' line each"
assert_eq "$(refused_count bad_content_length)" $N "nstance_http_refused_total{reason=\"bad_content_length\"}"
# A blank before the colon: libevent kept "Content-Length " as another header and read no body, so "{}"
# plus the smuggled request were read as requests of their own.
printf "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length : 2\r\n\r\n{}$SMUGGLED" | answers blank-before-colon "$BAD"
# Content-Length with Transfer-Encoding: libevent 2.1.12 refuses it by itself (our check is a second line).
printf 'POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n' |
    answers with-chunks "$BAD"
for i in $(seq 1 50); do
    [ "$(grep -cE "^nstance-secretsd: refused malformed 400 127\.0\.0\.1:[0-9]+$" "$LOG" || true)" -ge 2 ] && break
    sleep 0.1
done
assert_eq "$(grep -cE "^nstance-secretsd: refused malformed 400 127\.0\.0\.1:[0-9]+$" "$LOG" || true)" 2 \
    "a blank before the colon, and Content-Length with chunks: refused malformed"
assert_eq "$(refused_count malformed)" 2 "nstance_http_refused_total{reason=\"malformed\"}"
assert_not_contains "$LOG" "/smuggled" "no smuggled request was served"
assert_not_contains "$LOG" "request POST /health" "the handler never saw a refused request"
assert_not_contains "$T/m" 'endpoint="health",status="405"' "none counted as a request of ours"

# What stays accepted: one plain length, with blanks (SP, HTAB) around it, and a body-less GET with
# Content-Length: 0 (keep-alive: both answers on one connection).
printf 'POST /health HTTP/1.1\r\nHost: x\r\nContent-Length:\t 2 \r\n\r\n{}GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' |
    answers plain "HTTP/1.1 405 Method Not Allowed
HTTP/1.1 200 OK"
assert_eq "$(refused_count bad_content_length)" $N "a plain length is not refused"
assert_eq "$(curl -s --cacert "$T/ca.pem" -o /dev/null -w '%{http_code}' --data-binary '[1]' "$URL/v1/register")" 400 "curl's POST reaches the handler"
assert_contains "$LOG" "request POST /v1/register 400" "curl's POST is a request of ours"
assert_eq "$(refused_count bad_content_length)" $N "curl's POST is not refused"

ns_server_stop "$PID"
assert_eq "$NS_RC" 0 "exit status after SIGTERM"
echo "PASS"
