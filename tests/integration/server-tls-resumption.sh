#!/usr/bin/env bash
# Regression (issue 12, item 7): TLS session resumption failed with a fatal alert. The server asks for a
# client certificate (SSL_VERIFY_PEER) but set no session id context, so OpenSSL refused every resumed
# session: the second connection got "tlsv1 alert internal error".
#
# Covers: openssl s_client saves a session (-sess_out) made with an agent's client certificate and resumes
# it (-sess_in): "Reused", and GET /v1/agent/files answers 200 on the resumed session (the certificate of
# the full handshake is still the peer's, and authz checks it); curl makes two requests on two connections
# (Connection: close) in one invocation, the second resuming the first's session: both 200. Resumption skips
# no check: a session made without a client certificate, resumed, gets 401 on the agent endpoint; a
# session of an agent certificate gets 403 on the operator endpoint. After `ca rotate` the server makes a new
# TLS context (new ticket keys): a session from before is not resumed (a full handshake), and the request
# still works.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
ns_need curl openssl
. "$top_srcdir/tests/integration/agent-lib.sh"
agent_setup
agent_server_start
agent_nonce vm-1 web "$T/nonce-1"
agent_rc 0 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-1" --dir "$T/a1"
CERT=(-cert "$T/a1/identity.crt" -key "$T/a1/identity.key")

# sclient OUT PATH ARGS...: one HTTP/1.1 request over openssl s_client; waits for the server to close
# (-ign_eof), so the session tickets of TLS 1.3 (sent after the handshake) are in the saved session.
sclient() {
    local out=$1 path=$2
    shift 2
    printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" |
        timeout 60 openssl s_client -connect "127.0.0.1:$SRV_PORT" -servername localhost -CAfile "$T/ca.crt" \
            -verify_return_error -ign_eof "$@" >"$out" 2>&1 || true
}

# ---- s_client: save, then resume ----
sclient "$T/s1.out" /v1/agent/files "${CERT[@]}" -sess_out "$T/sess1"
assert_contains "$T/s1.out" "HTTP/1.1 200" "first connection: files with the client certificate"
assert_contains "$T/s1.out" "New, TLSv1.3" "first connection: a full handshake"
[ -s "$T/sess1" ] || fail "s_client saved no session"
sclient "$T/s2.out" /v1/agent/files "${CERT[@]}" -sess_in "$T/sess1"
assert_not_contains "$T/s2.out" "alert internal error" "resumption must not fail with an alert"
assert_contains "$T/s2.out" "Reused, TLSv1.3" "the second connection resumes the session"
assert_contains "$T/s2.out" "HTTP/1.1 200" "files on the resumed session (the session's certificate)"

# ---- curl: two connections in one invocation, the second resumes ----
codes=$(curl -s --cacert "$T/ca.crt" --cert "$T/a1/identity.crt" --key "$T/a1/identity.key" \
    -H 'Connection: close' -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\n' \
    "$SRV_URL/v1/agent/files" "$SRV_URL/v1/agent/files" || true)
assert_eq "$(printf '%s\n' "$codes" | tr '\n' ' ')" "200 1 200 1 " "curl: two connections, both 200"

# ---- resumption skips no check ----
sclient "$T/s3.out" /health -sess_out "$T/sess-anon"
assert_contains "$T/s3.out" "HTTP/1.1 200" "health without a certificate"
sclient "$T/s4.out" /v1/agent/files -sess_in "$T/sess-anon"
assert_contains "$T/s4.out" "Reused, TLSv1.3" "the session without a certificate resumes"
assert_contains "$T/s4.out" "HTTP/1.1 401" "no certificate in the session: 401"
sclient "$T/s5.out" /v1/operator/renew "${CERT[@]}" -sess_in "$T/sess1"
assert_contains "$T/s5.out" "Reused, TLSv1.3" "resumed"
assert_contains "$T/s5.out" "HTTP/1.1 405" "operator renew is POST only"
printf 'POST /v1/operator/renew HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}' |
    timeout 60 openssl s_client -connect "127.0.0.1:$SRV_PORT" -servername localhost -CAfile "$T/ca.crt" \
        -ign_eof "${CERT[@]}" -sess_in "$T/sess1" >"$T/s6.out" 2>&1 || true
assert_contains "$T/s6.out" "Reused, TLSv1.3" "resumed"
assert_contains "$T/s6.out" "HTTP/1.1 403" "an agent's resumed session is still not an operator"

# ---- a CA change: new context, old sessions are not resumed ----
expect_rc 0 ca rotate --type ecdsa-p256
expect_rc 0 ca bundle -o "$T/bundle2.pem"
openssl x509 -in "$T/bundle2.pem" -out "$T/new.pem"
ok=
for i in $(seq 1 300); do
    if curl -sf --cacert "$T/new.pem" "$SRV_URL/health" >/dev/null 2>&1; then
        ok=1
        break
    fi
    sleep 0.1
done
[ -n "$ok" ] || fail "the server's certificate did not change to the new CA within 30 s"
sclient "$T/s7.out" /v1/agent/files "${CERT[@]}" -sess_in "$T/sess1"
assert_contains "$T/s7.out" "New, TLSv1.3" "a session from before the CA change is not resumed"
assert_contains "$T/s7.out" "HTTP/1.1 200" "a full handshake with the certificate works"
kill -0 "$SRV_PID" || fail "the server died"
echo "# ok"
