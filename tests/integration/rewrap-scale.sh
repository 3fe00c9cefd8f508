#!/usr/bin/env bash
# Covers: rewrap of 10,000 blobs to a new primary survives repeated kill -9, resumes, and never disturbs a reader.
#
# In detail: 10,000 random 64-byte secrets are written under token key A (aes-gcm) by tests/tools/ns-fill, which
# also lists each plaintext's SHA-256 (the bucket lives under /dev/shm when that is writable, else in $T). The
# config has primary B (aes-kwp) and old A. 4 rounds of `rewrap --jobs 1|2` (alternating) each resume from
# where the last one stopped and are killed with SIGKILL at a random point inside the work still to do (the
# test watches how many blobs were rewritten and kills a random 0..19 ms after a random target is passed).
# After each kill: `verify` exits 0, names only A's and B's ids and their counts sum to 10,000 (the round
# prints how far it got), B's count never goes down, and `ns-fill --check` on a separate token copy opens
# every secret and finds every SHA-256 unchanged. At least two rounds must have stopped half-way (some blobs
# moved, some left). All through the rounds a reader loops `ns-fill --check` over all 10,000 plus random CLI
# `get`s on its own token copy, never sees a failure, and completes at least two full passes. The final
# `rewrap --jobs 2` reports 10,000 blobs, "0 failed", and re-wrapped/already counts equal to the last verify's
# A/B counts; verify then shows all 10,000 under B and no line for A; the payload bytes after the header are
# those of the pre-rewrap copy for every blob; after removing A from the config, verify exits 0 and
# ns-fill --check passes with B alone.
# Processes that run at the same time use separate copies of the SoftHSM token directory (see token_copy).
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
T_START=$(date +%s%N)

N=10000
ROUNDS=4
NS_FILL=${NS_FILL:-$top_builddir/tests/tools/ns-fill}
if [ ! -x "$NS_FILL" ]; then
    echo "$NS_FILL not built (make tests/tools/ns-fill)"
    exit 99
fi
ns_need python3

# The bucket: 10,000 files plus every fsync of every rewrap, on tmpfs when there is one.
SHM_DIR=
if [ -d /dev/shm ] && [ -w /dev/shm ] && SHM_DIR=$(mktemp -d /dev/shm/ns-rewrap-scale.XXXXXXXX 2>/dev/null); then
    BUCKET=$SHM_DIR/bucket
else
    SHM_DIR=
    BUCKET=$T/bucket
fi
_scale_cleanup() {
    if [ -n "$SHM_DIR" ] && [ -d "$SHM_DIR" ]; then
        if [ "${NS_KEEP_TMP:-}" = 1 ]; then
            echo "# kept bucket $SHM_DIR" >&2
        else
            rm -rf "$SHM_DIR"
        fi
    fi
    _ns_cleanup
}
trap _scale_cleanup EXIT
SECRETS=$BUCKET/cluster/secret
echo "# bucket: $BUCKET"

ns_token scale 2718-scale
URI_A="pkcs11:token=scale;object=kek-a?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-scale"
URI_B="pkcs11:token=scale;object=kek-b?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-scale"
KA="{source: pkcs11, uri: \"$URI_A\", mechanism: aes-gcm}"
KB="{source: pkcs11, uri: \"$URI_B\", mechanism: aes-kwp}"

# cfg FILE BUCKET PRIMARY [OLD...]
cfg() {
    local file=$1
    shift
    ns_ring_config "$file" scale "$@"
}

expect_rc 0 kek generate --uri "$URI_A" --mechanism aes-gcm
ID_A=$(sed -n 's/^generated aes-gcm key, id //p' "$T/out")
expect_rc 0 kek generate --uri "$URI_B" --mechanism aes-kwp
ID_B=$(sed -n 's/^generated aes-kwp key, id //p' "$T/out")
if [ "${#ID_A}" != 32 ] || [ "${#ID_B}" != 32 ] || [ "$ID_A" = "$ID_B" ]; then
    fail "test setup: KEK ids '$ID_A' '$ID_B'"
fi
cfg "$T/cfg-a.yaml" "$BUCKET" "$KA"
cfg "$T/config.yaml" "$BUCKET" "$KB" "$KA"

# ---- 10,000 secrets under A ----
t0=$(date +%s%N)
"$NS_FILL" -c "$T/cfg-a.yaml" -n "$N" -j 2 >"$T/list" 2>"$T/fill.err" || {
    cat "$T/fill.err" >&2
    fail "ns-fill -n $N"
}
t1=$(date +%s%N)
assert_eq "$(wc -l <"$T/list")" "$N" "ns-fill lists every secret"
assert_eq "$(cut -d' ' -f1 "$T/list" | sort -u | wc -l)" "$N" "ns-fill names are distinct"
echo "# ns-fill wrote $N secrets in $(((t1 - t0) / 1000000)) ms"
sleep 0.01
touch "$T/fill-done"
cut -d' ' -f1 "$T/list" >"$T/names"
mapfile -t NAMES <"$T/names"
cp -a "$SECRETS" "$T/before"

# verify_counts WHEN: verify must pass and name only A and B; sets N_A and N_B.
verify_counts() {
    expect_rc 0 verify
    assert_contains "$T/out" "verified $N blobs: $N ok, 0 failed" "$1: verify"
    N_A=$(sed -n "s/^kek $ID_A (old): \([0-9]*\)\$/\1/p" "$T/out")
    N_B=$(sed -n "s/^kek $ID_B (primary): \([0-9]*\)\$/\1/p" "$T/out")
    N_A=${N_A:-0}
    N_B=${N_B:-0}
    local lines
    lines=$(grep -c '^kek ' "$T/out" || true)
    if [ "$lines" -gt 2 ] || [ "$((N_A + N_B))" != "$N" ]; then
        cat "$T/out" >&2
        fail "$1: verify shows ids other than A ($ID_A) and B ($ID_B), or counts that do not sum to $N"
    fi
}
verify_counts "before rewrap"
assert_eq "$N_A" "$N" "before rewrap: every blob under A"

# SoftHSM 2.6 rewrites its token file on every C_Login, and another process reading that token at the same
# moment sees no token at all. So each process that runs *at the same time* as another uses its own copy of
# the token directory: same token, same keys, same KEK ids.
# token_copy NAME: a copy of the tokens and a softhsm2.conf for it, in $T/NAME.conf.
token_copy() {
    rm -rf "$T/tokens-$1"
    cp -a "$T/tokens" "$T/tokens-$1"
    sed "s#^directories.tokendir = .*#directories.tokendir = $T/tokens-$1#" "$SOFTHSM2_CONF" >"$T/$1.conf"
}
token_copy reader
token_copy check

# check_all WHEN: every secret opens and has its SHA-256 (on the check copy of the token: a reader runs).
check_all() {
    local rc=0
    SOFTHSM2_CONF=$T/check.conf "$NS_FILL" -c "$T/config.yaml" --check "$T/list" -j 2 >"$T/check.out" \
        2>"$T/check.err" || rc=$?
    if [ "$rc" != 0 ] || ! grep -qx "checked $N" "$T/check.out"; then
        head -n 20 "$T/check.err" >&2
        fail "$1: ns-fill --check (exit $rc): $(grep -c 'FAIL' "$T/check.err" || true) secret(s) do not read back"
    fi
}

# ---- the reader: full checks and random CLI gets, on its own token copy, until told to stop ----
cat >"$T/reader.sh" <<'SH'
#!/usr/bin/env bash
# reader.sh NS-FILL CLI CONFIG LIST STOP-FILE LOG: loop until STOP-FILE exists; "BAD ..." lines go to LOG,
# the number of full passes and good gets to LOG.count.
set -o pipefail
mapfile -t lines <"$4"
passes=0
gets=0
while [ ! -e "$5" ]; do
    if "$1" -c "$3" --check "$4" -j 1 >"$6.out" 2>"$6.err"; then
        passes=$((passes + 1))
    else
        echo "BAD ns-fill --check: $(grep -c FAIL "$6.err") failed; first: $(head -n 3 "$6.err")" >>"$6"
    fi
    for _ in 1 2 3 4 5; do
        [ ! -e "$5" ] || break
        l=${lines[(RANDOM * 32768 + RANDOM) % ${#lines[@]}]}
        n=${l%% *}
        rc=0
        got=$("$2" -c "$3" get "$n" 2>"$6.err" | sha256sum) || rc=$?
        if [ "$rc" -ne 0 ] || [ "${got%% *}" != "${l#* }" ]; then
            echo "BAD get $n: exit $rc: $(head -c 300 "$6.err")" >>"$6"
        else
            gets=$((gets + 1))
        fi
    done
done
echo "$passes $gets" >"$6.count"
SH
: >"$T/reader.log"
SOFTHSM2_CONF=$T/reader.conf bash "$T/reader.sh" "$NS_FILL" "$NS_CLI" "$T/config.yaml" "$T/list" \
    "$T/reader.stop" "$T/reader.log" &
READER=$!
ns_bg_pid "$READER"

# ---- kill -9 rounds: each resumes where the last one stopped ----
# Where a kill lands: a rewrap replaces each blob with a new file, so the blobs written after $T/fill-done are
# the ones under B (temp files start with '.', blob names with 'p'). Each round starts a rewrap, watches that
# count, and once it passes a random target inside the work still to do (10..70% of it; 10..40% in the last
# round) waits a random 0..19 ms more and sends SIGKILL. Fixed random delays were tried first: with the reader
# loading the machine, whole-run times varied by 2x and the kills often landed after the end.
moved() { find "$SECRETS" -type f -name 'p*' -newer "$T/fill-done" | wc -l; }
# alive PID: the process has not exited (a zombie has).
alive() {
    local st
    st=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
    [ -n "$st" ] && [ "$st" != Z ]
}
ms_now() { echo $(($(date +%s%N) / 1000000)); }
partial=0
prev_b=0
for round in $(seq 1 "$ROUNDS"); do
    jobs=$((2 - round % 2)) # --jobs 1, 2, 1, 2
    pct=$((10 + RANDOM % 61))
    # The last round stops early enough that the final rewrap has work to resume.
    [ "$round" -lt "$ROUNDS" ] || pct=$((10 + RANDOM % 31))
    target=$((prev_b + (N - prev_b) * pct / 100))
    t_a=$(ms_now)
    "$NS_CLI" -c "$T/config.yaml" rewrap --jobs "$jobs" >"$T/rewrap-$round.out" 2>"$T/rewrap-$round.err" &
    pid=$!
    while alive "$pid" && [ "$(moved)" -lt "$target" ]; do
        if [ $(($(ms_now) - t_a)) -gt 60000 ]; then
            kill -9 "$pid" 2>/dev/null || true
            fail "round $round: rewrap --jobs $jobs moved fewer than $target blobs in 60 s"
        fi
        sleep 0.005
    done
    sleep "$(printf '0.%03d' $((RANDOM % 20)))"
    kill -9 "$pid" 2>/dev/null || true
    rc=0
    wait "$pid" 2>/dev/null || rc=$?
    t_b=$(ms_now)
    if [ "$rc" != 137 ] && [ "$rc" != 0 ]; then
        cat "$T/rewrap-$round.err" >&2
        fail "round $round: rewrap --jobs $jobs exited $rc before the kill"
    fi
    verify_counts "after kill -9 in round $round"
    strays=$(find "$SECRETS" -name '.*.ns-tmp.*' -o -name '.tmp.*' | wc -l)
    how="killed after $((t_b - t_a)) ms (exit $rc; target $target)"
    [ "$rc" = 137 ] || how="finished by itself after $((t_b - t_a)) ms, before the kill"
    echo "# round $round: rewrap --jobs $jobs $how: $((N_B - prev_b)) re-wrapped in this round;" \
        "under B $N_B, under A $N_A ($((N_B * 100 / N))% done); stray temp files $strays"
    [ "$N_B" -ge "$prev_b" ] || fail "round $round: blobs under B went down from $prev_b to $N_B"
    if [ "$rc" = 137 ] && [ "$N_B" -gt "$prev_b" ] && [ "$N_A" -gt 0 ]; then
        partial=$((partial + 1))
    fi
    check_all "after kill -9 in round $round"
    prev_b=$N_B
    # Nothing left to interrupt: a further round would only kill a rewrap while it starts (and logs in).
    [ "$N_A" -gt 0 ] || break
done
[ "$partial" -ge 2 ] || fail "only $partial of $ROUNDS rewraps were killed half-way; the kill rounds tested little"

# ---- the final rewrap completes ----
t0=$(date +%s%N)
expect_rc 0 rewrap --jobs 2
t1=$(date +%s%N)
echo "# final rewrap --jobs 2: $N_A re-wrapped, $N_B skipped in $(((t1 - t0) / 1000000)) ms"
assert_contains "$T/out" "rewrap: $N blobs, $N_A re-wrapped, $N_B already under the primary key, 0 failed" \
    "final rewrap resumes exactly where the last kill left it"
touch "$T/reader.stop"
wait "$READER" || fail "the reader loop failed"
if [ -s "$T/reader.log" ]; then
    head -n 20 "$T/reader.log" >&2
    fail "the concurrent reader saw $(grep -c '^BAD' "$T/reader.log") failure(s)"
fi
read -r passes gets <"$T/reader.log.count"
echo "# concurrent reader: $passes full check(s) of $N secrets and $gets CLI gets, no failure"
[ "$passes" -ge 2 ] || fail "the concurrent reader completed only $passes full check(s)"

verify_counts "after the final rewrap"
assert_eq "$N_B" "$N" "after the final rewrap: every blob under B"
assert_not_contains "$T/out" "kek $ID_A" "after the final rewrap: no blob under A"
check_all "after the final rewrap"

# ---- only the header changed: the payload (after the header) is byte for byte the pre-rewrap one ----
python3 - "$T/before" "$SECRETS" "$T/names" "$ID_B" <<'PY' || fail "payload comparison"
import sys
before, after, names_file, id_b = sys.argv[1:5]
def header_len(b):
    return 4 + 1 + 1 + 1 + 1 + 16 + 2 + int.from_bytes(b[24:26], "big") + 12 + 16
bad = []
for name in open(names_file).read().split():
    old = open("%s/%s" % (before, name), "rb").read()
    new = open("%s/%s" % (after, name), "rb").read()
    if old[header_len(old):] != new[header_len(new):]:
        bad.append("%s: payload changed" % name)
    if new[8:24].hex() != id_b or new[5] != 2 or int.from_bytes(new[24:26], "big") != 40:
        bad.append("%s: the new header is not an aes-kwp header under B" % name)
    if old[5] != 1 or int.from_bytes(old[24:26], "big") != 60:
        bad.append("%s: the old header is not an aes-gcm header" % name)
if bad:
    print("\n".join(bad[:20]))
    sys.exit(1)
PY

# ---- without A ----
cfg "$T/config.yaml" "$BUCKET" "$KB"
verify_counts "with B alone"
assert_eq "$N_B" "$N" "with B alone: every blob under B"
"$NS_FILL" -c "$T/config.yaml" --check "$T/list" -j 2 >"$T/check.out" 2>"$T/check.err" || {
    head -n 20 "$T/check.err" >&2
    fail "ns-fill --check with B alone"
}
expect_rc 0 get "${NAMES[0]}"
assert_eq "$(sha256sum <"$T/out" | cut -d' ' -f1)" "$(sed -n 1p "$T/list" | cut -d' ' -f2)" "get with B alone"

T_END=$(date +%s%N)
echo "# PASS rewrap-scale: $N blobs, $ROUNDS kill -9 rounds ($partial half-way) in $(((T_END - T_START) / 1000000)) ms"
