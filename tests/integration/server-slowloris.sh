#!/usr/bin/env bash
# Regression test for issue 12, item 4: "Slowloris holds every slot". header_timeout and idle_timeout were
# libevent's per-connection read timeout, which starts again on every byte: clients sending one byte every
# second or two held all server.max_connections slots for as long as they liked. Now they are deadlines
# (src/server/refusals.c): the TLS handshake and the first request must be complete within header_timeout
# of accept, the next request within idle_timeout + header_timeout of the previous answer, whatever
# trickles in meanwhile. Here max_connections is 4 and four tricklers (one byte a second, each opening a new
# connection 0.5 s after the server closes one) fill every slot: two trickle a request head, one the TLS
# ClientHello itself, one the head of a second request on a keep-alive connection. Each of their
# connections must be closed at its deadline (not before it, not more than 2 s after it), each close logged
# ("refused header_timeout|idle_timeout - PEER") and counted, and a normal client must be served while they
# trickle.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need curl openssl python3
SLOW="python3 $top_srcdir/tests/tools/slowclient.py"

NS_SERVER_EXTRA='  header_timeout: 2s
  idle_timeout: 3s
  max_connections: 4' ns_server_config "$T/config.yaml" "$T/cache"
expect_rc 0 ca init
expect_rc 0 secret create registration-nonce.key --type ed25519
expect_rc 0 ca bundle -o "$T/ca.pem"
ns_server_start s "$T/config.yaml"
PORT=$SRV_PORT
PID=$SRV_PID
ns_server_ready "$PORT"
URL=https://127.0.0.1:$PORT
LOG=$T/s.log

SECONDS_TRICKLING=14
$SLOW trickle-many "$PORT" head 2 $SECONDS_TRICKLING 1 >"$T/head.out" 2>"$T/head.err" &
H=$!
$SLOW trickle-many "$PORT" tls 1 $SECONDS_TRICKLING 1 >"$T/tls.out" 2>"$T/tls.err" &
L=$!
$SLOW trickle-many "$PORT" next 1 $SECONDS_TRICKLING 1 >"$T/next.out" 2>"$T/next.err" &
N=$!
ns_bg_pid $H
ns_bg_pid $L
ns_bg_pid $N
# Once every trickler has a connection (so every slot is taken):
for i in $(seq 1 100); do
    [ "$(cat "$T/head.err" "$T/tls.err" "$T/next.err" | grep -c '^up ')" -ge 4 ] && break
    sleep 0.1
done
[ "$(cat "$T/head.err" "$T/tls.err" "$T/next.err" | grep -c '^up ')" -ge 4 ] || fail "the tricklers did not connect"
# A normal client, a new connection every 0.2 s, must be served within 8 s (the tricklers hold every slot
# but for a moment after each deadline; without deadlines they held them for as long as they ran).
t0=$(date +%s%N)
served=
while [ $((($(date +%s%N) - t0) / 1000000)) -lt 8000 ]; do
    code=$(curl -s --max-time 3 --cacert "$T/ca.pem" -o /dev/null -w '%{http_code}' "$URL/health" || true)
    if [ "$code" = 200 ]; then
        served=$((($(date +%s%N) - t0) / 1000000))
        break
    fi
    sleep 0.2
done
[ -n "$served" ] || fail "a normal client was not served within 8 s while the tricklers held every slot"
echo "# a normal client was served after $served ms"
kill -0 $H 2>/dev/null || fail "the tricklers ended early: $(cat "$T/head.err")"
wait $H $L $N
cat "$T/head.out" "$T/tls.out" "$T/next.out" | sort | uniq -c | sed 's/^/# /'

# check FILE KIND MIN MAX MINCLOSED: every connection of KIND closed within [MIN, MAX] s, open ones younger
# than MAX, at least MINCLOSED closed; prints the number closed.
check() {
    python3 - "$@" <<'EOF'
import sys
f, kind, lo, hi, minclosed = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
closed = 0
for line in open(f):
    what, k, secs = line.split()
    secs = float(secs)
    if what == "closed":
        closed += 1
        if not lo <= secs <= hi:
            sys.exit("a %s connection was closed after %.1f s (deadline window %.1f-%.1f s)" % (kind, secs, lo, hi))
    elif secs > hi:
        sys.exit("a %s connection was still open after %.1f s (deadline window %.1f-%.1f s)" % (kind, secs, lo, hi))
if closed < minclosed:
    sys.exit("only %d %s connections closed by the server, want %d" % (closed, kind, minclosed))
print(closed)
EOF
}
# header_timeout 2s from accept; idle_timeout 3s + header_timeout 2s from the first answer.
HEAD=$(check "$T/head.out" head 1.5 4.0 6 2>&1) || fail "$HEAD"
TLS=$(check "$T/tls.out" tls 1.5 4.0 3 2>&1) || fail "$TLS"
NEXT=$(check "$T/next.out" next 4.5 7.0 1 2>&1) || fail "$NEXT"

refused_count() {
    assert_eq "$(ns_https "$T/m" "$URL/metrics")" 200 "GET /metrics"
    sed -n "s/^nstance_http_refused_total{reason=\"$1\"} \([0-9]*\)$/\1/p" "$T/m"
}
sleep 0.5
H_LINES=$(grep -cE '^nstance-secretsd: refused header_timeout - 127\.0\.0\.1:[0-9]+$' "$LOG" || true)
I_LINES=$(grep -cE '^nstance-secretsd: refused idle_timeout - 127\.0\.0\.1:[0-9]+$' "$LOG" || true)
# Every close at a deadline is logged once; the tricklers' own closes at the end may add one per trickler.
[ "$H_LINES" -ge $((HEAD + TLS)) ] && [ "$H_LINES" -le $((HEAD + TLS + 3)) ] ||
    fail "$H_LINES 'refused header_timeout' lines for $((HEAD + TLS)) connections closed at their deadline"
[ "$I_LINES" -ge "$NEXT" ] && [ "$I_LINES" -le $((NEXT + 1)) ] ||
    fail "$I_LINES 'refused idle_timeout' lines for $NEXT connections closed at their deadline"
assert_eq "$(refused_count header_timeout)" "$H_LINES" "nstance_http_refused_total{reason=\"header_timeout\"}"
assert_eq "$(refused_count idle_timeout)" "$I_LINES" "nstance_http_refused_total{reason=\"idle_timeout\"}"
assert_contains "$T/m" "nstance_connections_over_limit_total" "connections over the limit are counted"

# Nothing else changed: a request whose head arrives within header_timeout is answered.
assert_eq "$($SLOW trickle "$PORT" "$T/ca.pem" 1)" "HTTP/1.1 200 OK" "headers within header_timeout"
ns_server_stop "$PID"
assert_eq "$NS_RC" 0 "exit status after SIGTERM"
echo "PASS"
