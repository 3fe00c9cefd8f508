#!/usr/bin/env bash
# Covers: secret rotate/rotate --pending/promote/retire orders and exports, every refusal (exit 7, message, nothing changed), concurrent create/rotate/retire lose nothing.
#
# In detail. Sequential, SoftHSM token KEK (aes-gcm): rotate puts a new current key in front and the old one
# becomes previous; rotate --pending keeps the current key, puts the new key at position 1 as pending, `pem`
# still exports the current key and jwks lists the pending key too; promote swaps them (the old current becomes
# previous); retire removes the oldest key and names it. Refusals exit 7 with a clear message and leave the
# stored blob byte for byte unchanged: retire of the only key, retire when the oldest key is pending
# ([current, pending]), promote without a pending key, rotate and rotate --pending while a pending key exists,
# a 17th key, rotate --from a key already in the secret; `secret create` of an existing name. An opaque rotate without --from exits 2; rotate --from a
# key of another type (and --from on a random secret) exits 8, unchanged. Concurrent, software KEK (no token
# file to share): two creators of one name, started together, 5 rounds: exactly one exits 0, the other 7, and
# the secret holds the winner's key; 2 and then 4 concurrent rotations of one secret all exit 0 and the secret
# ends with 1 + N keys, including every key id the rotations printed; a rotate concurrent with a retire: both
# exit 0 and the result is exactly [new, k2, k1] whatever the order (3 rounds); no temp file is left.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need python3

PIN="sec-life-2029"
ns_token sl "$PIN"
URI="pkcs11:token=sl;object=kek-sl?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-sl"
BUCKET=$T/bucket
SECRETS=$BUCKET/cluster/secret
ns_config <<EOF
cluster_id: secrets-lifecycle
storage: {backend: file, path: $BUCKET}
encryption_key: {source: pkcs11, uri: "$URI", mechanism: aes-gcm}
EOF
expect_rc 0 kek generate --uri "$URI" --mechanism aes-gcm

# show_keys: "position state id" per key of the last `secret show`, space separated on one line.
show_keys() { awk '$1 ~ /^[0-9]+$/ { printf "%s%s %s %s", sep, $1, $2, $3; sep = " " }' "$T/out"; }
show_ids() { awk '$1 ~ /^[0-9]+$/ { print $3 }' "$T/out"; }
# new_key: the key id printed by the last `secret create` or `secret rotate`.
new_key() { sed -n -e 's/^created .*, key \([A-Za-z0-9_-]*\)$/\1/p' -e 's/^rotated .*: new key \([A-Za-z0-9_-]*\).*$/\1/p' "$T/out"; }
spki_fp() {
    printf 'SHA256:%s' "$(openssl pkey -in "$1" -pubout -outform DER | openssl dgst -sha256 -binary | base64 -w0 |
        tr -d '=')"
}
jwks_kids() { python3 -c 'import json, sys; print(" ".join(k["kid"] for k in json.load(sys.stdin)["keys"]))' <"$T/out"; }

# refused CODE MESSAGE NAME ARGS...: `nstance-secrets ARGS...` exits CODE, stderr contains MESSAGE, and the
# stored blob of NAME is byte for byte what it was.
refused() {
    local code=$1 msg=$2 name=$3
    shift 3
    cp "$SECRETS/$name" "$T/before.blob"
    expect_rc "$code" "$@"
    assert_contains "$T/err" "$msg" "nstance-secrets $*: the message"
    cmp -s "$SECRETS/$name" "$T/before.blob" || fail "nstance-secrets $*: the stored secret changed"
    [ ! -s "$T/out" ] || fail "nstance-secrets $*: a refusal printed to stdout"
}

# ---- rotate, rotate --pending, promote, retire ----
S=sig/nonce.key
expect_rc 0 secret create "$S" --type ecdsa-p256
A=$(new_key)
expect_rc 0 secret rotate "$S"
B=$(new_key)
assert_contains "$T/out" "rotated $S: new key $B" "rotate names the new key"
assert_not_contains "$T/out" "pending" "a plain rotate is not pending"
expect_rc 0 secret show "$S"
assert_eq "$(show_keys)" "0 current $B 1 previous $A" "rotate: new current, old previous"
FP_B=$(awk '$1 == "0" { print $5 }' "$T/out")
expect_rc 0 secret export "$S" --format pem
cp "$T/out" "$T/pem-b"
assert_eq "$(spki_fp "$T/pem-b")" "$FP_B" "pem after rotate is the new key"

expect_rc 0 secret rotate "$S" --pending
C=$(new_key)
assert_contains "$T/out" "rotated $S: new key $C (pending)" "rotate --pending says pending"
expect_rc 0 secret show "$S"
assert_eq "$(show_keys)" "0 current $B 1 pending $C 2 previous $A" "rotate --pending: pending at position 1"
FP_C=$(awk '$1 == "1" { print $5 }' "$T/out")
expect_rc 0 secret export "$S" --format pem
cmp -s "$T/out" "$T/pem-b" || fail "pem after rotate --pending is not the current key any more"
expect_rc 0 secret export "$S" --format jwks
assert_eq "$(jwks_kids)" "$B $C $A" "jwks lists the pending key, in order"
expect_rc 0 secret export "$S" --format public-pem-bundle
assert_eq "$(grep -c -- '-----BEGIN PUBLIC KEY-----' "$T/out")" 3 "public-pem-bundle has the pending key"

# refusals while a pending key exists
refused 7 "pending key ($C) exists" "$S" secret rotate "$S" --pending
refused 7 "pending key ($C) exists" "$S" secret rotate "$S"

expect_rc 0 secret promote "$S"
assert_contains "$T/out" "promoted the pending key of $S" "promote says so"
expect_rc 0 secret show "$S"
assert_eq "$(show_keys)" "0 current $C 1 previous $B 2 previous $A" "promote: pending -> current, current -> previous"
expect_rc 0 secret export "$S" --format pem
cp "$T/out" "$T/pem-c"
assert_eq "$(spki_fp "$T/pem-c")" "$FP_C" "pem after promote is the promoted key"
refused 7 "no pending key" "$S" secret promote "$S"

expect_rc 0 secret retire "$S"
assert_contains "$T/out" "retired key $A from $S" "retire names the removed key"
expect_rc 0 secret show "$S"
assert_eq "$(show_keys)" "0 current $C 1 previous $B" "retire removes the oldest key"
expect_rc 0 secret retire "$S"
assert_contains "$T/out" "retired key $B from $S" "retire names the removed key"
expect_rc 0 secret show "$S"
assert_eq "$(show_keys)" "0 current $C" "retire down to one key"
refused 7 "only key" "$S" secret retire "$S"
expect_rc 0 secret export "$S" --format pem
cmp -s "$T/out" "$T/pem-c" || fail "the remaining key is not the promoted one"

# promote with no pending key: one key, and several previous keys
expect_rc 0 secret create r/one --type random
refused 7 "no pending key" r/one secret promote r/one
refused 7 "only key" r/one secret retire r/one

# 16 keys at most
F=r/full
expect_rc 0 secret create "$F" --type random --bytes 8
for i in $(seq 2 16); do
    expect_rc 0 secret rotate "$F"
done
expect_rc 0 secret show "$F"
assert_contains "$T/out" "keys: 16" "16 keys"
refused 7 "16 keys" "$F" secret rotate "$F"
refused 7 "16 keys" "$F" secret rotate "$F" --pending
expect_rc 0 secret retire "$F"
expect_rc 0 secret rotate "$F"
expect_rc 0 secret show "$F"
assert_contains "$T/out" "keys: 16" "a retire makes room for one more key"

# create of an existing name: 7, content unchanged
refused 7 "already exists" "$S" secret create "$S" --type ecdsa-p256
refused 7 "already exists" "$S" secret create "$S" --type random
expect_rc 0 secret show "$S"
assert_eq "$(show_keys)" "0 current $C" "create of an existing name changed the secret"

# opaque rotate without --from: usage (2); with --from: the new bytes
printf 'first credentials\n' >"$T/cred1"
printf 'second credentials\n' >"$T/cred2"
expect_rc 0 secret create o/cred --type opaque --from "$T/cred1"
refused 2 "needs --from" o/cred secret rotate o/cred
expect_rc 0 secret rotate o/cred --from "$T/cred2"
expect_rc 0 secret export o/cred --format raw
cmp "$T/out" "$T/cred2" || fail "opaque rotate --from: raw is not the new file"

# rotate --from a key of another type: bad input (8), unchanged; --from on a random secret too
openssl genpkey -algorithm ed25519 -out "$T/ed.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$T/p384.pem" 2>/dev/null
refused 8 "ed25519" "$S" secret rotate "$S" --from "$T/ed.pem"
refused 8 "ecdsa-p384" "$S" secret rotate "$S" --from "$T/p384.pem"
refused 8 "random" r/one secret rotate r/one --from "$T/ed.pem"
# ... and of the right type it is imported
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/p256.pem" 2>/dev/null
expect_rc 0 secret rotate "$S" --from "$T/p256.pem"
expect_rc 0 secret export "$S" --format pem
assert_eq "$(spki_fp "$T/out")" "$(spki_fp "$T/p256.pem")" "rotate --from imports that key"
# the same key again: its id is already in the secret (7)
refused 7 "already in the secret" "$S" secret rotate "$S" --from "$T/p256.pem"
refused 7 "already in the secret" "$S" secret rotate "$S" --pending --from "$T/p256.pem"

# ---- concurrency: a software KEK, so that no process touches the token ----
(
    umask 077
    head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$T/soft.key"
)
chmod 0600 "$T/soft.key"
[ "$(wc -c <"$T/soft.key")" = 64 ] || fail "test setup: the key file is not 64 hex characters"
cat >"$T/soft.yaml" <<EOF
cluster_id: secrets-lifecycle
storage: {backend: file, path: $T/cbucket}
encryption_key: {source: file, path: $T/soft.key}
EOF
CSECRETS=$T/cbucket/cluster/secret

# run-at.sh GO PREFIX ARGS...: wait until GO exists, then run the CLI with ARGS; PREFIX.out/.err/.rc.
cat >"$T/run-at.sh" <<'EOF'
go=$1 p=$2
shift 2
while [ ! -e "$go" ]; do sleep 0.002; done
rc=0
NSTANCE_SECRETS_LOG=info "$NS_CLI" "$@" >"$p.out" 2>"$p.err" || rc=$?
echo "$rc" >"$p.rc"
EOF
# racer GO PREFIX ARGS...: start one CLI process (software KEK) that waits until GO exists.
RACE_PIDS=()
racer() {
    local go=$1 p=$2
    shift 2
    rm -f "$p.rc" "$p.out" "$p.err"
    bash "$T/run-at.sh" "$go" "$p" -c "$T/soft.yaml" "$@" &
    RACE_PIDS+=("$!")
    ns_bg_pid "$!"
}
# release GO: let every racer started on GO go at once; wait for all of them.
release() {
    local pid
    sleep 0.2
    touch "$1"
    for pid in "${RACE_PIDS[@]}"; do
        wait "$pid" || true
    done
    RACE_PIDS=()
}
# race LABEL N ARGS...: N processes running ARGS, released together; outputs $T/LABEL-i.out/.err/.rc.
race() {
    local label=$1 n=$2 i
    shift 2
    rm -f "$T/go-$label"
    for i in $(seq 1 "$n"); do
        racer "$T/go-$label" "$T/$label-$i" "$@"
    done
    release "$T/go-$label"
    for i in $(seq 1 "$n"); do
        [ -f "$T/$label-$i.rc" ] || fail "$label: process $i left no exit status"
    done
}
# soft ARGS...: run the CLI with the software KEK; like ns_run.
soft() {
    printf '# step: nstance-secrets -c soft.yaml'
    printf ' %q' "$@"
    printf '\n'
    NS_RC=0
    "$NS_CLI" -c "$T/soft.yaml" "$@" >"$T/out" 2>"$T/err" || NS_RC=$?
}
soft_ok() {
    soft "$@"
    [ "$NS_RC" = 0 ] || {
        cat "$T/err" >&2
        fail "nstance-secrets $*: exit $NS_RC"
    }
}

# two creators of one name: exactly one wins, the other gets 7, and the stored key is the winner's
for round in 1 2 3 4 5; do
    race "create$round" 2 secret create "c/created-$round" --type ed25519
    rc1=$(cat "$T/create$round-1.rc")
    rc2=$(cat "$T/create$round-2.rc")
    assert_eq "$(printf '%s\n' "$rc1" "$rc2" | LC_ALL=C sort | tr '\n' ' ')" "0 7 " \
        "round $round: two concurrent creates exit 0 and 7 (got $rc1 and $rc2)"
    w=1
    [ "$rc1" = 0 ] || w=2
    l=$((3 - w))
    assert_contains "$T/create$round-$l.err" "already exists" "the losing creator says it exists"
    winner=$(sed -n 's/^created .*, key \([A-Za-z0-9_-]*\)$/\1/p' "$T/create$round-$w.out")
    soft_ok secret show "c/created-$round"
    assert_eq "$(show_keys)" "0 current $winner" "round $round: the stored key is the winner's"
done

# N concurrent rotations: all land
rotate_race() {
    local name=$1 type=$2 n=$3 i ids want
    soft_ok secret create "$name" --type "$type"
    local first
    first=$(new_key)
    race "rot-$n" "$n" secret rotate "$name"
    for i in $(seq 1 "$n"); do
        [ "$(cat "$T/rot-$n-$i.rc")" = 0 ] || {
            cat "$T/rot-$n-$i.err" >&2
            fail "$n concurrent rotations: process $i exited $(cat "$T/rot-$n-$i.rc")"
        }
    done
    soft_ok secret show "$name"
    assert_contains "$T/out" "keys: $((n + 1))" "$n concurrent rotations: 1 + $n keys"
    ids=$(show_ids | LC_ALL=C sort | tr '\n' ' ')
    want=$(
        {
            echo "$first"
            for i in $(seq 1 "$n"); do
                sed -n 's/^rotated .*: new key \([A-Za-z0-9_-]*\)$/\1/p' "$T/rot-$n-$i.out"
            done
        } | LC_ALL=C sort | tr '\n' ' '
    )
    assert_eq "$ids" "$want" "$n concurrent rotations: every printed key is in the secret"
    # the original key is the oldest; states are current, previous...
    assert_eq "$(show_ids | tail -n 1)" "$first" "$n concurrent rotations: the first key is the oldest"
    assert_eq "$(awk '$1 ~ /^[0-9]+$/ { print $2 }' "$T/out" | sort | uniq -c | awk '{ print $2 "=" $1 }' |
        tr '\n' ' ')" "current=1 previous=$n " "$n concurrent rotations: states"
    # (not asserted: how often a compare-and-swap was lost and retried, to show the race is real)
    echo "# $n concurrent rotations of $name: $(cat "$T"/rot-"$n"-*.err | grep -c 'applying the change again' ||
        true) retried compare-and-swap(s)"
}
for round in 1 2 3; do
    rotate_race "c/rot2-$round" ed25519 2
done
for round in 1 2 3; do
    rotate_race "c/rot4-$round" random 4
done

# a rotate and a retire at the same time: [k2, k1, k0] always ends as [new, k2, k1]
soft_ok secret create c/rr --type ecdsa-p256
K0=$(new_key)
soft_ok secret rotate c/rr
K1=$(new_key)
soft_ok secret rotate c/rr
K2=$(new_key)
for round in 1 2 3; do
    soft_ok secret show c/rr
    mapfile -t before < <(show_ids)
    if [ "$round" = 1 ]; then
        assert_eq "${before[*]}" "$K2 $K1 $K0" "three keys before the race"
    fi
    rm -f "$T/go-rr$round"
    racer "$T/go-rr$round" "$T/rr$round-rot" secret rotate c/rr
    racer "$T/go-rr$round" "$T/rr$round-ret" secret retire c/rr
    release "$T/go-rr$round"
    for what in rot ret; do
        [ "$(cat "$T/rr$round-$what.rc" 2>/dev/null)" = 0 ] || {
            cat "$T/rr$round-$what.err" >&2
            fail "round $round: concurrent rotate + retire: the $what process failed"
        }
    done
    new=$(sed -n 's/^rotated .*: new key \([A-Za-z0-9_-]*\)$/\1/p' "$T/rr$round-rot.out")
    assert_contains "$T/rr$round-ret.out" "retired key ${before[2]} from c/rr" \
        "round $round: retire removed the oldest key"
    soft_ok secret show c/rr
    assert_eq "$(show_keys)" "0 current $new 1 previous ${before[0]} 2 previous ${before[1]}" \
        "round $round: concurrent rotate + retire"
done
# no writer left a temporary file behind
leftover=$(find "$CSECRETS" -name '.*' -type f)
[ -z "$leftover" ] || fail "temporary files left in the bucket: $leftover"

# ---- [current, pending]: the oldest key is pending; retire refuses (7), promote still works ----
P=sig/pending.key
expect_rc 0 secret create "$P" --type ed25519
P0=$(new_key)
expect_rc 0 secret rotate "$P" --pending
P1=$(new_key)
expect_rc 0 secret show "$P"
assert_eq "$(show_keys)" "0 current $P0 1 pending $P1" "[current, pending]"
refused 7 "pending key" "$P" secret retire "$P"
expect_rc 0 secret promote "$P"
expect_rc 0 secret show "$P"
assert_eq "$(show_keys)" "0 current $P1 1 previous $P0" "promote of [current, pending]"

echo "# PASS secrets-lifecycle"
