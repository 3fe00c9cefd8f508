#!/usr/bin/env bash
# Regression test for issue 12, item 5: "Out of file descriptors, the server spins". With `ulimit -n 64` and
# 80 TCP connections, accept() failed with EMFILE and libevent tried again at once, for ever: 800,000 log
# lines in 3 s, 80 % CPU, and store refreshes failing for want of a descriptor. Now (src/server/http.c):
# at start the server checks RLIMIT_NOFILE against server.max_connections + its margin (32 + 4 per thread),
# raises the soft limit up to the hard one, and if that is not enough lowers max_connections with a warning
# (refuses to start if not even one connection fits); an accept() failure pauses accepting (100 ms to 1 s),
# sheds the waiting connection through a reserve descriptor, is logged at most once a second and counted.
# Here: hard limit 64 with 2 threads (max_connections lowered to 64 - 40 = 24); the server is stopped while
# 80 connections queue up, so that on SIGCONT it meets them in one burst. Over the next 3 s its log must stay
# short and its CPU time low; a secret rotated meanwhile must still be read from the store (no descriptor
# shortage at all: connections over the limit are paced, one per loop pass); once the connections close, a
# normal client is served and gets the rotated secret. Then the same with the soft limit lowered under the
# running server to a few descriptors above what it holds (so that accept() does fail with EMFILE): the
# failure is logged at most once a second, counted with the connections shed, and the server serves again
# once the connections close. Also: a low soft limit is raised at start, and a hard limit below the margin
# is refused (exit 2).
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need curl openssl python3 getconf
ns_need_py cryptography
CL="python3 $top_srcdir/tests/tools/srvclient.py"
SLOW="python3 $top_srcdir/tests/tools/slowclient.py"

NS_SERVER_EXTRA='  header_timeout: 10s' ns_server_config "$T/config.yaml" "$T/cache"
expect_rc 0 ca init
expect_rc 0 secret create registration-nonce.key --type ed25519
expect_rc 0 secret create k8s-sa.key --type ed25519
expect_rc 0 ca bundle -o "$T/ca.pem"

# start_limited NAME ULIMIT_ARGS: nstance-secretsd under `ulimit ULIMIT_ARGS`; waits until it listens.
start_limited() {
    local name=$1 i
    shift
    : >"$T/$name.log"
    bash -c 'ulimit '"$*"' && exec "$0" -c "$1"' "$top_builddir/nstance-secretsd" "$T/config.yaml" 2>"$T/$name.log" &
    SRV_PID=$!
    ns_bg_pid "$SRV_PID"
    SRV_PORT=
    for i in $(seq 1 100); do
        SRV_PORT=$(sed -n 's/^nstance-secretsd: listening on .* (port \([0-9][0-9]*\)).*$/\1/p' "$T/$name.log" || true)
        [ -n "$SRV_PORT" ] && break
        kill -0 "$SRV_PID" 2>/dev/null || {
            cat "$T/$name.log" >&2
            fail "nstance-secretsd ($name) exited at start"
        }
        sleep 0.1
    done
    [ -n "$SRV_PORT" ] || fail "nstance-secretsd ($name) did not listen within 10 s"
}

# ---- a hard limit below what the server needs besides connections: refused ----
NS_RC=0
timeout 20 bash -c 'ulimit -n 40 && exec "$0" -c "$1"' "$top_builddir/nstance-secretsd" "$T/config.yaml" 2>"$T/low.log" || NS_RC=$?
assert_eq "$NS_RC" 2 "exit status with ulimit -n 40"
assert_contains "$T/low.log" "open files: the limit is 40" "the reason is logged"

# ---- a low soft limit is raised (up to the hard limit) ----
HARD=$(ulimit -Hn)
start_limited soft -Sn 64
grep '^Max open files' "/proc/$SRV_PID/limits" >"$T/limits"
want=1064 # max_connections 1024 + 32 + 4 × 2 threads
if [ "$HARD" != unlimited ] && [ "$HARD" -lt $want ]; then want=$HARD; fi
assert_eq "$(awk '{print $4}' "$T/limits")" "$want" "the soft limit raised to max_connections + margin"
ns_server_stop "$SRV_PID"

# ---- hard limit 64: max_connections lowered, then a burst of connections ----
start_limited s -n 64
PID=$SRV_PID
PORT=$SRV_PORT
LOG=$T/s.log
ns_server_ready "$PORT"
URL=https://127.0.0.1:$PORT
assert_contains "$LOG" "server.max_connections lowered from 1024 to 24" "max_connections fitted to the limit"
expect_rc 0 nonce issue --kind agent --sub vm-1 --tenant acme --shard s1 --group cp
assert_eq "$(ns_server_register "$PORT" vm1 "$(cat "$T/out")")" 200 "register"
AG=(--cert "$T/vm1.crt" --key "$T/vm1.key")
assert_eq "$(ns_https "$T/f1" "${AG[@]}" "$URL/v1/agent/files")" 200 "files before the flood"
V1=$($CL field "$T/f1" version)
echo "# descriptors open before the flood: $(ls "/proc/$PID/fd" | wc -l)"

TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

# burst NAME: stop the server, queue 80 connections, let it go on; then 3 s in which its log must stay short
# and its CPU time low, while a secret is rotated (read by the refresh, cache_check 1s). Not counted: the
# refresh's own lines (storage errors, one set a second, when the descriptors really are short).
loglines() { grep -cv -e ' storage: ' -e ' refresh: ' -e ' cache: ' "$LOG" || true; }
burst() {
    local name=$1 lines0 lines1 cpu0 cpu1 i
    rm -f "$T/stop-$name"
    kill -STOP "$PID"
    $SLOW flood "$PORT" 80 "$T/stop-$name" >"$T/$name.out" 2>&1 &
    FLOOD=$!
    ns_bg_pid $FLOOD
    for i in $(seq 1 100); do
        grep -q '^connected 80$' "$T/$name.out" && break
        sleep 0.1
    done
    lines0=$(loglines)
    cpu0=$(cpu)
    kill -CONT "$PID"
    assert_contains "$T/$name.out" "connected 80" "80 connections queued"
    expect_rc 0 secret rotate k8s-sa.key
    sleep 3
    lines1=$(loglines)
    cpu1=$(cpu)
    echo "# $name, 3 s: $((lines1 - lines0)) log lines, $(((cpu1 - cpu0) * 1000 / TCK)) ms of CPU, $(ls "/proc/$PID/fd" | wc -l) descriptors open"
    [ $((lines1 - lines0)) -le 12 ] || {
        tail -n 20 "$LOG" >&2
        fail "$name: $((lines1 - lines0)) log lines in 3 s"
    }
    [ $(((cpu1 - cpu0) * 1000 / TCK)) -le 600 ] || fail "$name: $(((cpu1 - cpu0) * 1000 / TCK)) ms of CPU in 3 s"
    kill -0 "$PID" || fail "the server died"
}

# after NAME: close the burst's connections; a normal client is served, and gets the rotated secret.
after() {
    local name=$1 ok= i v
    touch "$T/stop-$name"
    wait "$FLOOD"
    sed 's/^/# flood: /' "$T/$name.out"
    for i in $(seq 1 100); do
        [ "$(ns_https "$T/h" "$URL/health")" = 200 ] && ok=1 && break
        sleep 0.1
    done
    [ -n "$ok" ] || fail "$name: no normal client served after the connections closed"
    v=$V1
    for i in $(seq 1 40); do
        ns_https "$T/f2" "${AG[@]}" "$URL/v1/agent/files" >/dev/null
        v=$($CL field "$T/f2" version)
        [ "$v" != "$V1" ] && break
        sleep 0.25
    done
    [ "$v" != "$V1" ] || fail "$name: the secret rotated during the burst did not reach /v1/agent/files"
    V1=$v
}

# ---- 1. within the budget: connections over max_connections never take the store's descriptors ----
burst budget
grep -i -e 'too many open files' -e 'cache:' -e 'refresh:' "$LOG" >"$T/errs" || true
[ ! -s "$T/errs" ] || fail "the store ran out of descriptors: $(cat "$T/errs")"
assert_contains "$LOG" "connection refused: 24 connections open (server.max_connections 24)" "connections over the limit are refused"
after budget
assert_eq "$(ns_https "$T/m" "$URL/metrics")" 200 "metrics"
grep -q '^nstance_connections_over_limit_total [1-9]' "$T/m" || fail "connections over the limit not counted"

# ---- 2. out of descriptors all the same (the soft limit lowered under the running server): accept()
# fails with EMFILE; the server pauses accepting and sheds, instead of spinning ----
n=$(ls "/proc/$PID/fd" | wc -l)
python3 -c "import resource, sys; resource.prlimit(int(sys.argv[1]), resource.RLIMIT_NOFILE, (int(sys.argv[2]), 64))" "$PID" $((n + 6))
burst emfile
assert_contains "$LOG" "accept: Too many open files; not accepting for" "the EMFILE path ran (and is logged)"
[ "$(grep -c 'accept: Too many open files' "$LOG")" -le 4 ] || fail "accept failures logged more than once a second"
python3 -c "import resource, sys; resource.prlimit(int(sys.argv[1]), resource.RLIMIT_NOFILE, (64, 64))" "$PID"
after emfile
assert_eq "$(ns_https "$T/m" "$URL/metrics")" 200 "metrics"
grep -q '^nstance_accept_errors_total [1-9]' "$T/m" || fail "accept errors not counted: $(grep accept "$T/m")"
grep -q '^nstance_connections_shed_total [1-9]' "$T/m" || {
    # Seen once (ASan build, 1 run in 5): no connection shed in the burst. Keep what tells why.
    grep -E 'accept|shed|open files|cache|refresh' "$LOG" | tail -n 20 >&2
    ls -l "/proc/$PID/fd" >&2 || true
    fail "shed connections not counted: $(grep shed "$T/m")"
}
ns_server_stop "$PID"
assert_eq "$NS_RC" 0 "exit status after SIGTERM"
echo "PASS"
