#!/usr/bin/env bash
# Regression (issue 12, item 8: log injection): strings an unauthenticated client sends reach the log escaped.
# A registration nonce whose JWT header names a kid with a newline and a whole forged request line in it used to
# be logged as-is at the info level, so the log showed a request that never happened. Now every ns_log line is
# escaped at the sink (src/common/log.c): the forged text appears only inside the real line, as "\x0a...".
# Also: a kid with terminal escape bytes; a request path with control bytes (the request line's own escaping).
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need curl openssl
ns_need_py cryptography

ns_server_config "$T/config.yaml" "$T/cache"
expect_rc 0 ca init
expect_rc 0 secret create registration-nonce.key --type ed25519
expect_rc 0 ca bundle -o "$T/ca.pem"
NSTANCE_SECRETS_LOG=debug ns_server_start s "$T/config.yaml"
PORT=$SRV_PORT
ns_server_ready "$PORT"
URL=https://127.0.0.1:$PORT

openssl genpkey -algorithm ed25519 -out "$T/agent.key" 2>/dev/null || fail "openssl genpkey"
openssl pkey -in "$T/agent.key" -pubout -out "$T/agent.pub" 2>/dev/null || fail "openssl pkey"

# A JWT-shaped nonce: header {"alg":"EdDSA","kid":KID,"typ":"JWT"}, some payload, a 64-byte signature.
/usr/bin/python3 - "$T/agent.pub" >"$T/body.json" <<'PY' || fail "making the request body"
import base64, json, sys
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
kid = "k\nnstance-secretsd: request GET /forged 200 \x1b[2J"
hdr = b(json.dumps({"alg": "EdDSA", "kid": kid, "typ": "JWT"}).encode())
pay = b(json.dumps({"iss": "x", "sub": "y", "exp": 4102444800}).encode())
print(json.dumps({"nonce": hdr + "." + pay + "." + b(bytes(64)), "public_key": open(sys.argv[1]).read()}))
PY
code=$(ns_https "$T/out" -X POST --data-binary @"$T/body.json" -H 'Content-Type: application/json' \
    "$URL/v1/register")
[ "$code" = 401 ] || [ "$code" = 400 ] || [ "$code" = 403 ] || fail "register with a forged kid: $code, not a refusal"

# A request path with an encoded newline and escape byte: 404, logged without them.
code=$(ns_https "$T/out" "$URL/v1/%0Anstance-secretsd:%20request%20GET%20/forged2%20200%1b")
[ "$code" = 404 ] || fail "GET of an unknown path: $code, not 404"

# Wait for the registration's refusal to be logged (the request lines are flushed from the event loop).
for _ in $(seq 1 50); do
    grep -q 'request POST /v1/register' "$T/s.log" && break
    sleep 0.1
done
grep -q 'request POST /v1/register' "$T/s.log" || fail "no request line for the registration"
grep -q "kid 'k\\\\x0anstance-secretsd: request GET /forged 200" "$T/s.log" ||
    fail "the kid is not in the log, escaped (was the line that names it logged at all?)"
grep -q '\\x1b\[2J' "$T/s.log" || fail "the escape byte of the kid is not shown as \\x1b"
if grep -qE '^nstance-secretsd: request GET /forged' "$T/s.log"; then
    fail "a forged request line starts a line of the log"
fi
if LC_ALL=C grep -q $'\x1b' "$T/s.log"; then
    fail "a raw escape byte reached the log"
fi
if grep -qE '^nstance-secretsd: request GET /forged2' "$T/s.log"; then
    fail "a forged request line (from the path) starts a line of the log"
fi
ns_server_stop "$SRV_PID"
assert_eq "$NS_RC" 0 "exit status after SIGTERM"
echo "PASS"
