#!/usr/bin/env bash
# Covers: file (hex/base64/raw) and env KEKs, key file checks, mixed token/file/env rings, removed and duplicate keys.
#
# In detail: each key-file format round-trips and the same key in every encoding has one KEK id; env KEKs (hex,
# base64); relative key paths resolve against the config's folder; key files with group/other access (0644,
# 0640, 0604) or behind a symlink are refused (exit 4) naming the file, 0400 is accepted; malformed key files
# and env values (exit 8) naming the source; missing key file / env variable (exit 3); a mixed ring (primary
# D = token aes-kwp, old = A token aes-gcm, B file, C env) reads every blob, `kek list` shows all four and
# verify prints each id with its count; new puts go under the primary and the counts move; a blob under a
# KEK that is no longer configured gives exit 4 "no configured key" (get and verify); the same key configured
# twice (file hex + file raw, file + env, the same token URI twice) is a config error (exit 2) for every
# command that loads the keys.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

PIN="ring-pin-3141"
ns_token ring "$PIN"
BUCKET=$T/bucket
SECRETS=$BUCKET/cluster/secret
URI_A="pkcs11:token=ring;object=kek-a?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-ring"
URI_D="pkcs11:token=ring;object=kek-d?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-ring"
mkdir -p "$T/keys"

# keyfile NAME: write stdin to $T/keys/NAME with mode 0600.
keyfile() {
    (
        umask 077
        cat >"$T/keys/$1"
    )
    chmod 0600 "$T/keys/$1"
}
# hexof FILE / b64of FILE: encodings of 32 raw bytes.
hexof() { od -An -v -tx1 "$1" | tr -d ' \n'; }
b64of() { base64 -w0 "$1"; }

# config PRIMARY [OLD...]: each argument is the YAML flow mapping of one KEK.
config() {
    local primary=$1
    shift
    {
        printf 'cluster_id: ring\nstorage: {backend: file, path: %s}\n' "$BUCKET"
        printf 'encryption_key: %s\n' "$primary"
        if [ "$#" -gt 0 ]; then
            printf 'old_encryption_keys:\n'
            local k
            for k in "$@"; do
                printf '  - %s\n' "$k"
            done
        fi
    } | ns_config
}

# primary_id: set PRIMARY_ID to the primary's id from `kek list` (which must exit 0).
primary_id() {
    expect_rc 0 kek list
    PRIMARY_ID=$(awk '$1 == "primary" && $4 == "reachable" { print $2 }' "$T/out")
    [ "${#PRIMARY_ID}" = 32 ] || {
        cat "$T/out" >&2
        fail "kek list: no reachable primary"
    }
}

# roundtrip NAME: put random content as NAME, get it back, keep the plaintext in $T/plain/NAME.
roundtrip() {
    mkdir -p "$(dirname "$T/plain/$1")"
    head -c $((RANDOM % 3000 + 1)) /dev/urandom >"$T/plain/$1"
    expect_rc 0 put "$1" "$T/plain/$1"
    expect_rc 0 get "$1"
    cmp "$T/out" "$T/plain/$1" || fail "get $1: content differs"
}
# check NAME: get NAME and compare with what was put.
check() {
    expect_rc 0 get "$1"
    cmp "$T/out" "$T/plain/$1" || fail "get $1: content differs"
}

# ---- file KEK B in three encodings: same key, same id ----
head -c 32 /dev/urandom >"$T/b.raw"
keyfile b.raw <"$T/b.raw"
hexof "$T/b.raw" | keyfile b.hex
{
    hexof "$T/b.raw"
    echo
} | keyfile b.hex-nl
hexof "$T/b.raw" | tr a-f A-F | keyfile b.HEX
b64of "$T/b.raw" | keyfile b.b64
{
    b64of "$T/b.raw"
    echo
} | keyfile b.b64-nl
[ "$(wc -c <"$T/keys/b.hex")" = 64 ] || fail "test setup: hex key file length"
[ "$(wc -c <"$T/keys/b.b64")" = 44 ] || fail "test setup: base64 key file length"

config "{source: file, path: $T/keys/b.hex}"
primary_id
ID_B=$PRIMARY_ID
assert_contains "$T/out" "software-aes-gcm" "kek list: mechanism of a file key"
assert_contains "$T/out" "file $T/keys/b.hex" "kek list: source of a file key"
roundtrip file/hex-1
for f in b.raw b.hex-nl b.HEX b.b64 b.b64-nl; do
    config "{source: file, path: $T/keys/$f}"
    primary_id
    assert_eq "$PRIMARY_ID" "$ID_B" "key file $f: same key, same id"
    check file/hex-1
    roundtrip "file/$f"
done
# relative path: against the config's folder
config "{source: file, path: keys/b.b64}"
primary_id
assert_eq "$PRIMARY_ID" "$ID_B" "relative key path"
check file/b.raw

# ---- env KEK C ----
head -c 32 /dev/urandom >"$T/c.raw"
C_HEX=$(hexof "$T/c.raw")
C_B64=$(b64of "$T/c.raw")
config "{source: env, name: NS_TEST_KEK_C}"
export NS_TEST_KEK_C=$C_HEX
primary_id
ID_C=$PRIMARY_ID
assert_contains "$T/out" "env NS_TEST_KEK_C" "kek list: source of an env key"
[ "$ID_C" != "$ID_B" ] || fail "two different keys have one id"
roundtrip env/c-1
NS_TEST_KEK_C=$C_B64
primary_id
assert_eq "$PRIMARY_ID" "$ID_C" "env key in base64: same id"
check env/c-1
roundtrip env/c-2
NS_TEST_KEK_C=$(printf '%s\n' "$C_B64")$'\n'
check env/c-2
NS_TEST_KEK_C=$C_HEX

# ---- token KEK A (aes-gcm), D (aes-kwp) ----
expect_rc 0 kek generate --uri "$URI_A" --mechanism aes-gcm
ID_A=$(sed -n 's/^generated aes-gcm key, id //p' "$T/out")
expect_rc 0 kek generate --uri "$URI_D" --mechanism aes-kwp
ID_D=$(sed -n 's/^generated aes-kwp key, id //p' "$T/out")
config "{source: pkcs11, uri: \"$URI_A\", mechanism: aes-gcm}"
primary_id
assert_eq "$PRIMARY_ID" "$ID_A" "token key A id"
roundtrip token/a-1
roundtrip token/a-2
roundtrip token/a-3

# more blobs under B and C so that every count differs
config "{source: file, path: $T/keys/b.hex}"
roundtrip file/b-extra
config "{source: env, name: NS_TEST_KEK_C}"
roundtrip env/c-3
roundtrip env/c-4
# now: A 3 blobs, B 6 (hex-1 + 5 encodings), C 4 (c-1, c-2, c-3, c-4)... plus b-extra: B 7
N_A=3
N_B=7
N_C=4

# ---- the mixed ring: primary D, old A, B, C ----
KA="{source: pkcs11, uri: \"$URI_A\", mechanism: aes-gcm}"
KB="{source: file, path: $T/keys/b.hex}"
KC="{source: env, name: NS_TEST_KEK_C}"
KD="{source: pkcs11, uri: \"$URI_D\", mechanism: aes-kwp}"
config "$KD" "$KA" "$KB" "$KC"
expect_rc 0 kek list
for want in "primary $ID_D aes-kwp reachable" "old $ID_A aes-gcm reachable" \
    "old $ID_B software-aes-gcm reachable" "old $ID_C software-aes-gcm reachable"; do
    # shellcheck disable=SC2086
    set -- $want
    awk -v r="$1" -v i="$2" -v m="$3" -v s="$4" '$1 == r && $2 == i && $3 == m && $4 == s { ok = 1 }
        END { exit !ok }' "$T/out" || {
        cat "$T/out" >&2
        fail "kek list: no row '$want'"
    }
done
assert_eq "$(grep -c reachable "$T/out")" 4 "kek list: four keys"
for f in "$T"/plain/*/*; do
    check "${f#"$T/plain/"}"
done
expect_rc 0 verify
assert_contains "$T/out" "kek $ID_A (old): $N_A" "verify: count under A"
assert_contains "$T/out" "kek $ID_B (old): $N_B" "verify: count under B"
assert_contains "$T/out" "kek $ID_C (old): $N_C" "verify: count under C"
assert_not_contains "$T/out" "kek $ID_D" "verify: nothing under D yet"
TOTAL=$((N_A + N_B + N_C))
assert_contains "$T/out" "verified $TOTAL blobs: $TOTAL ok, 0 failed" "verify summary of the mixed ring"
assert_eq "$(grep -c '^kek ' "$T/out")" 3 "verify: three ids"

# new puts go under the primary; replacing a blob moves it from its old key to the primary
roundtrip new/d-1
roundtrip new/d-2
roundtrip token/a-1
roundtrip env/c-1
assert_eq "$(od -An -tx1 -j8 -N16 "$SECRETS/new/d-1" | tr -d ' \n')" "$ID_D" "a new blob is under the primary"
expect_rc 0 verify
assert_contains "$T/out" "kek $ID_D (primary): 4" "verify: count under D after new puts"
assert_contains "$T/out" "kek $ID_A (old): $((N_A - 1))" "verify: count under A after a replace"
assert_contains "$T/out" "kek $ID_B (old): $N_B" "verify: count under B unchanged"
assert_contains "$T/out" "kek $ID_C (old): $((N_C - 1))" "verify: count under C after a replace"
TOTAL=$((TOTAL + 2))
assert_contains "$T/out" "verified $TOTAL blobs: $TOTAL ok, 0 failed" "verify summary after new puts"

# ---- a blob under a KEK that is no longer configured ----
config "$KD" "$KA" "$KB"
expect_rc 4 get env/c-2
assert_contains "$T/err" "no configured key" "get of a blob under a removed key"
[ ! -s "$T/out" ] || fail "get of a blob under a removed key printed something"
check token/a-2
check file/b-extra
expect_rc 4 verify
assert_contains "$T/out" "kek $ID_C (not configured): $((N_C - 1))" "verify: the removed key's blobs"
assert_contains "$T/out" "$((N_C - 1)) failed" "verify: the removed key's blobs fail"
for n in env/c-2 env/c-3 env/c-4; do
    assert_contains "$T/err" "FAIL cluster/secret/$n: " "verify names $n"
done
assert_eq "$(grep -c '^FAIL ' "$T/err")" $((N_C - 1)) "verify: exactly the removed key's blobs fail"
assert_contains "$T/err" "no configured key" "verify: the reason"
# the env variable unset while the config still names it: strict commands fail, naming the variable
config "$KD" "$KA" "$KB" "$KC"
env -u NS_TEST_KEK_C "$NS_CLI" -c "$T/config.yaml" get token/a-2 >"$T/out" 2>"$T/err" && rc_unset=0 || rc_unset=$?
assert_eq "$rc_unset" 3 "get with an old env KEK whose variable is unset"
assert_contains "$T/err" "NS_TEST_KEK_C" "the message names the variable"

# ---- key file permissions ----
cp "$T/keys/b.hex" "$T/keys/perm.hex"
for mode in 0644 0640 0604 0660 0606; do
    chmod "$mode" "$T/keys/perm.hex"
    config "{source: file, path: $T/keys/perm.hex}"
    expect_rc 4 get file/b.raw
    assert_contains "$T/err" "$T/keys/perm.hex" "key file mode $mode: the message names the file"
    assert_contains "$T/err" "permissions" "key file mode $mode: the message names the problem"
    expect_rc 4 put perm/x "$T/b.raw"
    [ ! -e "$SECRETS/perm/x" ] || fail "a refused key file still stored a blob"
    # also as an old key
    config "$KD" "{source: file, path: $T/keys/perm.hex}"
    expect_rc 4 get new/d-1
    expect_rc 4 kek list
    assert_contains "$T/out" "unreachable" "kek list: a key file with mode $mode is unreachable"
done
chmod 0400 "$T/keys/perm.hex"
config "{source: file, path: $T/keys/perm.hex}"
check file/b.raw
chmod 0600 "$T/keys/perm.hex"
ln -s "$T/keys/b.hex" "$T/keys/link.hex"
config "{source: file, path: $T/keys/link.hex}"
expect_rc 4 get file/b.raw
assert_contains "$T/err" "$T/keys/link.hex" "symlinked key file: the message names the file"
config "{source: file, path: $T/keys/no-such.key}"
expect_rc 3 get file/b.raw
assert_contains "$T/err" "$T/keys/no-such.key" "missing key file: the message names the file"

# ---- malformed key material: exit 8 ----
i=0
while IFS= read -r spec; do
    i=$((i + 1))
    printf '%b' "$spec" | keyfile "bad-$i"
    config "{source: file, path: $T/keys/bad-$i}"
    expect_rc 8 get file/b.raw
    assert_contains "$T/err" "$T/keys/bad-$i" "malformed key file $i ($spec): the message names the file"
    expect_rc 8 put bad/x "$T/b.raw"
done <<'EOF'
0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde
0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0
0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg
0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\n
 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef 
AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8
AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=A
AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh*=
AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8A
thirty-one bytes of raw key....
thirty-three bytes of raw key....
\n
EOF
: | keyfile empty
config "{source: file, path: $T/keys/empty}"
expect_rc 8 get file/b.raw
[ ! -e "$SECRETS/bad/x" ] || fail "a malformed key file still stored a blob"
config "{source: env, name: NS_TEST_KEK_BAD}"
NS_TEST_KEK_BAD=${C_HEX:0:62} expect_rc 8 get env/c-1
assert_contains "$T/err" "NS_TEST_KEK_BAD" "malformed env key: the message names the variable"
NS_TEST_KEK_BAD="not a key" expect_rc 8 get env/c-1
NS_TEST_KEK_BAD="" expect_rc 8 get env/c-1
expect_rc 3 get env/c-1
assert_contains "$T/err" "NS_TEST_KEK_BAD" "unset env key: the message names the variable"

# ---- the same key configured twice: exit 2 for every command that loads keys ----
same_key_twice() {
    local what=$1
    expect_rc 2 get new/d-1
    assert_contains "$T/err" "configured twice" "$what: get says the key is configured twice"
    expect_rc 2 put twice/x "$T/b.raw"
    [ ! -e "$SECRETS/twice/x" ] || fail "$what: put stored a blob"
    expect_rc 2 verify
    expect_rc 2 kek list
    expect_rc 2 rewrap
}
config "$KD" "{source: file, path: $T/keys/b.hex}" "{source: file, path: $T/keys/b.raw}"
same_key_twice "file hex + file raw"
config "{source: file, path: $T/keys/b.b64}" "$KA" "{source: file, path: $T/keys/b.hex}"
same_key_twice "primary file + old file"
NS_TEST_KEK_B=$(hexof "$T/b.raw")
export NS_TEST_KEK_B
config "$KD" "{source: file, path: $T/keys/b.hex}" "{source: env, name: NS_TEST_KEK_B}"
same_key_twice "file + env"
config "$KD" "$KA" "$KA"
same_key_twice "the same token URI twice"
config "$KD" "$KD"
same_key_twice "the primary token key again as an old key"
echo "# PASS cli-keyring"
