#!/usr/bin/env bash
# Regression (found while fixing issue 12): when the server cannot set up TLS for a connection (SSL_new fails:
# memory), its bufferevent callback returns NULL and libevent reads the connection in plain text; the request
# handler then served it — /health in plain HTTP, and every endpoint a client certificate is not needed for.
# Now a request on a connection without TLS gets 503 with "Connection: close" and a warning, nothing else.
# SSL_new is made to fail on demand by an LD_PRELOAD library (tests/tools/ssl-new-fault.c) while a file exists.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need curl
PRELOAD=$top_builddir/tests/tools/.libs/ssl-new-fault.so
[ -f "$PRELOAD" ] || fail "missing $PRELOAD (make check builds it)"

ns_server_config "$T/config.yaml" "$T/cache"
expect_rc 0 ca init
expect_rc 0 secret create registration-nonce.key --type ed25519
expect_rc 0 ca bundle -o "$T/ca.pem"
# ASan wants its runtime first in the library list; the preloaded library does not use it.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" LD_PRELOAD=$PRELOAD \
    NS_SSL_NEW_FAIL=$T/fail ns_server_start s "$T/config.yaml"
PORT=$SRV_PORT
ns_server_ready "$PORT"

touch "$T/fail"
for path in /health /v1/ca /metrics /v1/register; do
    code=$(curl -s -o "$T/body" -D "$T/headers" -w '%{http_code}' "http://127.0.0.1:$PORT$path" || true)
    [ "$code" = 503 ] || fail "plain HTTP $path while TLS set-up fails: $code, not 503"
    assert_contains "$T/headers" "Connection: close" "plain HTTP $path: the connection is closed"
    assert_not_contains "$T/body" "ok" "plain HTTP $path: no health answer"
    assert_not_contains "$T/body" "BEGIN CERTIFICATE" "plain HTTP $path: no CA bundle"
done
# An HTTPS client gets no TLS handshake at all while SSL_new fails (the server answers in plain text).
code=$(curl -s --cacert "$T/ca.pem" -o /dev/null -w '%{http_code}' --max-time 5 "https://127.0.0.1:$PORT/health" ||
    true)
[ "$code" != 200 ] || fail "an HTTPS request succeeded while the server's SSL_new fails"
assert_contains "$T/s.log" "a connection without TLS (its TLS set-up failed): refused and closed" "warning"

rm -f "$T/fail"
code=$(ns_https /dev/null "https://127.0.0.1:$PORT/health")
[ "$code" = 200 ] || fail "HTTPS /health after the fault: $code"
ns_server_stop "$SRV_PID"
assert_eq "$NS_RC" 0 "exit status after SIGTERM"
echo "PASS"
