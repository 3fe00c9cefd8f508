#!/usr/bin/env bash
# Covers: requests that libevent refuses by itself, before our handler runs (src/server/refusals.c), each with
# one "refused REASON STATUS PEER" log line and a count in nstance_http_refused_total{reason}; the server keeps
# serving after every one. POST /v1/register with a body over 64 KiB: with Content-Length (curl, and raw with
# and without "Expect: 100-continue"), with a Content-Length far over the limit and no body, and chunked: 413
# (libevent's page). With neither Content-Length nor chunked the request has no body (RFC 9112 §6.3): our
# handler answers it 400, and the body's bytes, read as the next request, are refused as malformed (400). A
# malformed request line, headers over 16 KiB, a bad Content-Length, a bad chunk size: 400; an unknown method:
# 501; "Expect: something": 417. Timeouts: a client that sends half a request line is closed after
# server.header_timeout (header_timeout), a keep-alive connection after server.idle_timeout (idle_timeout). And
# what must not count: answers of our own handler (404, 405, 400 of bad JSON), clients that close by themselves.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need curl openssl python3
SLOW="python3 $top_srcdir/tests/tools/slowclient.py"

NS_SERVER_EXTRA='  header_timeout: 2s
  idle_timeout: 3s' ns_server_config "$T/config.yaml" "$T/cache"
expect_rc 0 ca init
expect_rc 0 secret create registration-nonce.key --type ed25519
expect_rc 0 secret create k8s-sa.key --type ed25519
expect_rc 0 secret create web.key --type ed25519
expect_rc 0 ca bundle -o "$T/ca.pem"
ns_server_start s "$T/config.yaml"
PORT=$SRV_PORT
PID=$SRV_PID
ns_server_ready "$PORT"
URL=https://127.0.0.1:$PORT
LOG=$T/s.log

# refused_count REASON: the counter's value in /metrics.
refused_count() {
    local code
    code=$(ns_https "$T/m" "$URL/metrics")
    [ "$code" = 200 ] || fail "GET /metrics: $code"
    sed -n "s/^nstance_http_refused_total{reason=\"$1\"} \([0-9]*\)$/\1/p" "$T/m"
}

# expect_refused REASON STATUS N: N log lines "refused REASON STATUS 127.0.0.1:PORT" (within 5 s: a timeout
# is logged when the connection ends) and the counter at N; the server still answers /health.
expect_refused() {
    local reason=$1 status=$2 n=$3 i got=0
    for i in $(seq 1 50); do
        got=$(grep -cE "^nstance-secretsd: refused $reason $status 127\.0\.0\.1:[0-9]+$" "$LOG" || true)
        [ "$got" -ge "$n" ] && break
        sleep 0.1
    done
    assert_eq "$got" "$n" "log lines 'refused $reason $status'"
    assert_eq "$(refused_count "$reason")" "$n" "nstance_http_refused_total{reason=\"$reason\"}"
    assert_eq "$(ns_https "$T/h" "$URL/health")" 200 "the server keeps serving after $reason"
}

# send NAME: write stdin to $T/NAME.req, send it raw over TLS, print the status lines of the answers.
send() {
    cat >"$T/$1.req"
    $SLOW send "$PORT" "$T/$1.req"
}

# Nothing refused yet; every reason is listed at 0.
for r in body_too_large malformed method_not_implemented expectation_failed other header_timeout idle_timeout; do
    assert_eq "$(refused_count "$r")" 0 "$r at start"
done

# ---- bodies over 64 KiB ----
head -c 70000 /dev/zero | tr '\0' 'a' >"$T/big"
# libevent answers as soon as it has the headers and closes with the rest of the body unread, which resets
# the connection: once in a while curl is still sending then, fails on the reset and never reads the 413
# (status 000). The server has refused it all the same (and logged it): count every attempt.
tries=0
for try in 1 2 3; do
    tries=$try
    code=$(ns_https "$T/e" --data-binary @"$T/big" "$URL/v1/register")
    [ "$code" != 000 ] && break
done
assert_eq "$code" 413 "curl, Content-Length 70000"
assert_contains "$T/e" "413" "libevent's page"
expect_refused body_too_large 413 $tries
{
    printf 'POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n'
    cat "$T/big"
} | send cl >"$T/out.cl"
assert_eq "$(cat "$T/out.cl")" "HTTP/1.1 413 Request Entity Too Large" "raw, Content-Length 70000"
expect_refused body_too_large 413 $((tries + 1))
{
    printf 'POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\nExpect: 100-continue\r\n\r\n'
} | send expect >"$T/out.expect"
assert_eq "$(cat "$T/out.expect")" "HTTP/1.1 413 Request Entity Too Large" "Expect: 100-continue, Content-Length 70000"
expect_refused body_too_large 413 $((tries + 2))
printf 'POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n' | send huge >"$T/out.huge"
assert_eq "$(cat "$T/out.huge")" "HTTP/1.1 413 Request Entity Too Large" "Content-Length far over the limit"
expect_refused body_too_large 413 $((tries + 3))
python3 - "$T/big" >"$T/chunked.req" <<'EOF'
import sys
body = open(sys.argv[1], "rb").read()
out = sys.stdout.buffer
out.write(b"POST /v1/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
for i in range(0, len(body), 8192):
    c = body[i:i + 8192]
    out.write(b"%x\r\n" % len(c) + c + b"\r\n")
out.write(b"0\r\n\r\n")
EOF
assert_eq "$($SLOW send "$PORT" "$T/chunked.req")" "HTTP/1.1 413 Request Entity Too Large" "chunked, 70000 bytes"
expect_refused body_too_large 413 $((tries + 4))
# Chunked but small enough: our handler gets it (bad JSON: 400 of ours, not a refusal).
printf 'POST /v1/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{"a":\r\n0\r\n\r\n' |
    send smallchunked >"$T/out.sc"
assert_eq "$(cat "$T/out.sc")" "HTTP/1.1 400 Bad Request" "a small chunked body reaches the handler"
assert_contains "$LOG" "request POST /v1/register 400" "our 400 is a request line"
# Neither Content-Length nor chunked: no body; the 70000 bytes are the next "request": a line over 16 KiB.
{
    printf 'POST /v1/register HTTP/1.1\r\nHost: x\r\n\r\n'
    cat "$T/big"
} | send nolength >"$T/out.nl"
# (The client may not see the second answer: the server closes with the rest unread, and the reset can
# overtake it. The log has both.)
assert_eq "$(head -n 1 "$T/out.nl")" "HTTP/1.1 400 Bad Request" "no Content-Length: our 400 (an empty body)"
expect_refused malformed 400 1
assert_eq "$(grep -c 'request POST /v1/register 400' "$LOG")" 2 "the small chunked body and the empty one"
assert_eq "$(refused_count body_too_large)" $((tries + 4)) "still as many bodies too large"

# ---- malformed requests ----
printf 'GARBAGE\r\n\r\n' | send garbage >"$T/out.g"
assert_eq "$(cat "$T/out.g")" "HTTP/1.1 400 Bad Request" "a malformed request line"
expect_refused malformed 400 2
{
    printf 'GET /health HTTP/1.1\r\nHost: x\r\nX-Big: '
    head -c 20000 /dev/zero | tr '\0' 'b'
    printf '\r\n\r\n'
} | send bighdr >"$T/out.bh"
assert_eq "$(cat "$T/out.bh")" "HTTP/1.1 400 Bad Request" "headers over 16 KiB"
expect_refused malformed 400 3
printf 'POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n' | send badcl >"$T/out.bcl"
assert_eq "$(cat "$T/out.bcl")" "HTTP/1.1 400 Bad Request" "a Content-Length that is not a number"
expect_refused malformed 400 4
# A chunk size that is not hex: libevent 2.1.12 reports a corrupt chunk as "data too long", so 413.
printf 'POST /v1/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n' | send badchunk >"$T/out.bc"
assert_eq "$(cat "$T/out.bc")" "HTTP/1.1 413 Request Entity Too Large" "a bad chunk size"
expect_refused body_too_large 413 $((tries + 5))
printf 'BREW /health HTTP/1.1\r\nHost: x\r\n\r\n' | send brew >"$T/out.brew"
assert_eq "$(cat "$T/out.brew")" "HTTP/1.1 501 Not Implemented" "an unknown method"
expect_refused method_not_implemented 501 1
printf 'POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: tea\r\n\r\n{}' | send tea >"$T/out.tea"
assert_eq "$(cat "$T/out.tea")" "HTTP/1.1 417 Expectation Failed" "an unsupported Expect"
expect_refused expectation_failed 417 1

# ---- timeouts ----
secs=$($SLOW idle "$PORT")
python3 -c "import sys; s=float('$secs'); sys.exit(0 if 1.0 <= s <= 6.0 else 1)" ||
    fail "half a request line was cut off after $secs s (header_timeout 2s)"
expect_refused header_timeout - 1
# A TCP connection that never starts TLS: closed after header_timeout too, its peer known all the same.
python3 - "$PORT" <<'EOF2'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.recv(1)
EOF2
expect_refused header_timeout - 2
secs=$($SLOW keepalive "$PORT")
python3 -c "import sys; s=float('$secs'); sys.exit(0 if 2.0 <= s <= 8.0 else 1)" ||
    fail "an idle keep-alive connection was closed after $secs s (idle_timeout 3s)"
expect_refused idle_timeout - 1
# Headers that trickle in within header_timeout are answered, and nothing is refused.
assert_eq "$($SLOW trickle "$PORT" "$T/ca.pem" 1)" "HTTP/1.1 200 OK" "headers within header_timeout"

# ---- what is not a refusal ----
# Our handler's own answers (404, 405, 400 of bad JSON), clients that close by themselves (curl, once
# answered; a TLS connection closed before any request; one closed after half a request line), a TLS
# handshake that fails: request lines or nothing, never "refused".
before=$(grep -c 'refused' "$LOG")
assert_eq "$(ns_https "$T/e" "$URL/nope")" 404 "unknown path"
assert_eq "$(ns_https "$T/e" -X DELETE "$URL/health")" 405 "wrong method"
assert_eq "$(ns_https "$T/e" --data-binary '[1]' "$URL/v1/register")" 400 "not an object"
python3 - "$PORT" <<'EOF2'
import socket, ssl, sys, time
c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
c.check_hostname = False
c.verify_mode = ssl.CERT_NONE
port = int(sys.argv[1])
t = c.wrap_socket(socket.create_connection(("127.0.0.1", port)))
t.close()
t = c.wrap_socket(socket.create_connection(("127.0.0.1", port)))
t.sendall(b"GET /hea")
time.sleep(0.5)
t.close()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"not TLS at all\r\n\r\n")
time.sleep(0.5)
s.close()
EOF2
sleep 3.5 # longer than both timeouts: a connection wrongly counted as timed out would show by now
assert_eq "$(grep -c 'refused' "$LOG")" "$before" "no refusal logged for ordinary answers and closes"
for r in body_too_large:$((tries + 5)) malformed:4 method_not_implemented:1 expectation_failed:1 other:0 header_timeout:2 idle_timeout:1; do
    assert_eq "$(refused_count "${r%%:*}")" "${r#*:}" "final count of ${r%%:*}"
done
# Our own answers are counted where they always were, libevent's are not.
assert_contains "$T/m" 'nstance_requests_total{endpoint="other",status="404"} 1' "our 404 counted as a request"
assert_not_contains "$T/m" 'status="501"' "libevent's 501 is not a request of ours"
# Nothing from the requests reaches the log: not the bodies, not the header, not the method.
assert_not_contains "$LOG" "aaaaaaaa" "no body in the log"
assert_not_contains "$LOG" "bbbbbbbb" "no header value in the log"
assert_not_contains "$LOG" "BREW" "no unknown method in the log"
assert_not_contains "$LOG" "GARBAGE" "no request line in the log"

ns_server_stop "$PID"
assert_eq "$NS_RC" 0 "exit status after SIGTERM"
echo "PASS"
