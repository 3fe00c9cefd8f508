#!/usr/bin/env bash
# Regression test for issue 12, item 3: "the agent's symlink check runs before, not at, the write".
#
# The old agent lstat()ed every component of a path while it parsed the server's answer, then made folders,
# created the temporary file and renamed it *by path*, so a local user who owns a folder below --root and
# swaps it for a symbolic link between the check and the write had root-owned secret files made outside
# --root (the issue's report: within 27 syncs). The agent now walks from a held descriptor of --root, one
# component at a time with openat(O_DIRECTORY|O_NOFOLLOW) / mkdirat, and creates, renames and fsyncs inside
# the held parent folder (doc/agent.md, "Where files land").
#
# Here a helper swaps $ROOT/etc/app (a real folder) with a symbolic link to $OUT as fast as it can, with
# renameat2(RENAME_EXCHANGE) so that `app` is always one or the other, while the agent syncs (the "web"
# template: four files under /etc/app, one in a folder that is made). files.version is removed before
# every sync so that each one is a full 200 answer that is checked and written. Asserted after every sync:
# nothing ever appears in $OUT, the agent exits 0 (wrote through the real folder), 8 (the check met the
# link) or 6 (the write met the link), never anything else (a crash is 134/139), and a refusal names the
# symbolic link. After the swapping stops: a sync writes the four files in $ROOT/etc/app with the
# template's modes, and no temporary file is left anywhere below $ROOT.
#
# On the old code this test fails: a file or folder appears in $OUT (checked against the branch point).
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
PY=/usr/bin/python3
if [ ! -x "$PY" ]; then
    echo "$PY not installed"
    exit 99
fi
. "$top_srcdir/tests/integration/agent-lib.sh"
agent_setup
agent_server_start
ROOT=$T/root
OUT=$T/outside
mkdir -p "$ROOT/etc/app" "$OUT"

agent_nonce vm-race web "$T/nonce"
agent_rc 0 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce" --dir "$T/a"

# The swapper: exchanges etc/app and etc/app.lnk (-> $OUT) until SIGTERM, then leaves `app` the folder.
# It prints "ready" once an exchange has worked (renameat2 missing or refused: exit 99, a hard error).
cat >"$T/swap.py" <<'EOF'
import ctypes, os, signal, sys

etc, out, count_file = sys.argv[1:4]
libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2
d = os.open(etc, os.O_RDONLY | os.O_DIRECTORY)
os.symlink(out, "app.lnk", dir_fd=d)


def xchg():
    if libc.renameat2(d, b"app", d, b"app.lnk", RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


try:
    xchg()
    xchg()
except (OSError, AttributeError) as e:
    print("renameat2(RENAME_EXCHANGE) not usable: %s" % e, flush=True)
    sys.exit(99)
stop = False


def on_term(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
n = 0
while not stop:
    xchg()
    n += 1
if n % 2:
    xchg()
with open(count_file, "w") as f:
    f.write("%d\n" % n)
EOF
"$PY" "$T/swap.py" "$ROOT/etc" "$OUT" "$T/swaps" >"$T/swap.out" 2>&1 &
SWAP_PID=$!
ns_bg_pid "$SWAP_PID"
for _ in $(seq 1 100); do
    grep -q ready "$T/swap.out" 2>/dev/null && break
    if ! kill -0 "$SWAP_PID" 2>/dev/null; then
        cat "$T/swap.out" >&2
        wait "$SWAP_PID" && rc=0 || rc=$?
        [ "$rc" = 99 ] && exit 99
        fail "the swapper exited at start"
    fi
    sleep 0.1
done
grep -q ready "$T/swap.out" || fail "the swapper did not start"

# 100 syncs, or as many as run in 120 s (at least 60).
n_ok=0 n_check=0 n_write=0
start=$(date +%s)
for i in $(seq 1 100); do
    rm -f "$T/a/files.version"
    rc=0
    "$AGENT" sync --server "$SRV_URL" --dir "$T/a" --root "$ROOT" >"$T/aout" 2>"$T/aerr" || rc=$?
    if [ -n "$(ls -A "$OUT")" ]; then
        ls -laR "$OUT" >&2
        fail "sync $i (exit $rc) made something in the folder the link points to"
    fi
    case $rc in
    0) n_ok=$((n_ok + 1)) ;;
    8)
        n_check=$((n_check + 1))
        assert_contains "$T/aerr" "symbolic link" "sync $i: exit 8 names the link"
        ;;
    6)
        n_write=$((n_write + 1))
        assert_contains "$T/aerr" "symbolic link" "sync $i: exit 6 names the link"
        ;;
    *)
        cat "$T/aerr" >&2
        fail "sync $i: exit $rc (want 0, 6 or 8)"
        ;;
    esac
    kill -0 "$SWAP_PID" 2>/dev/null || fail "the swapper died"
    [ $(($(date +%s) - start)) -lt 120 ] || break
done
kill -TERM "$SWAP_PID"
wait "$SWAP_PID" || fail "the swapper failed"
echo "# $i syncs while the swapper made $(cat "$T/swaps") exchanges: $n_ok wrote, $n_check refused at the check, $n_write refused at the write"
[ "$i" -ge 60 ] || fail "only $i syncs ran"
[ -d "$ROOT/etc/app" ] && [ ! -L "$ROOT/etc/app" ] || fail "the swapper did not leave etc/app a folder"
[ -z "$(ls -A "$OUT")" ] || fail "something was made in the folder the link points to"

# Without the swapper: one sync writes every file in the right place.
rm -f "$ROOT/etc/app.lnk" "$T/a/files.version"
agent_rc 0 sync --server "$SRV_URL" --dir "$T/a" --root "$ROOT"
assert_contains "$T/aout" "4 file(s)"
expect_rc 0 secret export app.tok --format raw -o "$T/exp.tok"
cmp -s "$ROOT/etc/app/token" "$T/exp.tok" || fail "token differs from secret export"
cmp -s "$ROOT/etc/app/ca.crt" "$T/ca.crt" || fail "ca.crt differs from the CA bundle"
assert_file_mode "$ROOT/etc/app/tls/app.pem" 600
assert_file_mode "$ROOT/etc/app/token" 640
assert_eq "$(stat -c %G "$ROOT/etc/app/token")" daemon "token's group"
left=$(find "$ROOT" -name '*.ns-tmp.*')
[ -z "$left" ] || fail "temporary files left below --root: $left"
# Nothing but the template's files and folders below --root.
(cd "$ROOT" && find . | sort) >"$T/tree"
printf '%s\n' . ./etc ./etc/app ./etc/app/app.jwks ./etc/app/ca.crt ./etc/app/tls ./etc/app/tls/app.pem \
    ./etc/app/token >"$T/tree.want"
diff "$T/tree.want" "$T/tree" >&2 || fail "unexpected entries below --root"
[ -z "$(ls -A "$OUT")" ] || fail "something was made in the folder the link points to"
echo "# agent-symlink-race: ok"
