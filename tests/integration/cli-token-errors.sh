#!/usr/bin/env bash
# Covers: wrong PIN, missing token/module/object, bad PIN sources: exact exit codes, clear messages, bucket untouched.
#
# In detail: wrong PIN (4, "login failed", CKR_PIN_INCORRECT; the right PIN still works afterwards); token=nosuch
# (5); module-path to a missing file, to a file that is not a library and to a library
# that is not a PKCS#11 module (5, path named); no PIN source for a login-required token (4, "needs a PIN");
# pin_env naming an unset variable (4); a missing PIN file (4); a PIN file with mode 0644/0640 (4, file
# named); a relative pin-source (8); object=nosuch (5); two objects with one label (5); a URI naming no
# object (8); a non-"pkcs11:" URI (2). The same faults on an old key also stop strict commands. None of
# these leaves any file in the bucket, and the PIN is never printed.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

PIN="terr-pin-9090"
ns_token terr "$PIN"
GOOD_URI="pkcs11:token=terr;object=kek?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-terr"
GOOD_BUCKET=$T/bucket-good
ERR_BUCKET=$T/bucket-err
: >"$T/all-output"

expect_rc 0 kek generate --uri "$GOOD_URI" --mechanism aes-gcm
ns_config "$T/good.yaml" <<EOF
cluster_id: terr
storage: {backend: file, path: $GOOD_BUCKET}
encryption_key: {source: pkcs11, uri: "$GOOD_URI", mechanism: aes-gcm}
EOF
head -c 100 /dev/urandom >"$T/plain"
"$NS_CLI" -c "$T/good.yaml" put existing "$T/plain" || fail "put with the good config"

# Files used by the error cases.
(
    umask 077
    printf '0000' >"$T/pin-wrong"
    printf '%s' "$PIN" >"$T/pin-0644"
    printf '%s' "$PIN" >"$T/pin-0640"
)
chmod 0644 "$T/pin-0644"
chmod 0640 "$T/pin-0640"
printf 'not a shared library\n' >"$T/not-a-module.so"
LIBCRYPTO=$(ldd "$NS_CLI" | awk '$1 ~ /^libcrypto\.so/ { print $3 }')
[ -f "$LIBCRYPTO" ] || fail "test setup: cannot find libcrypto (a library without C_GetFunctionList)"
ns_p11 terr "$PIN" --keygen --key-type AES:32 --sensitive --label twin || fail "pkcs11-tool --keygen twin 1"
ns_p11 terr "$PIN" --keygen --key-type AES:32 --sensitive --label twin || fail "pkcs11-tool --keygen twin 2"

# err_config URI [EXTRA]: the error config, primary = that URI, into the (empty) error bucket.
err_config() {
    ns_config <<EOF
cluster_id: terr
storage: {backend: file, path: $ERR_BUCKET}
encryption_key: {source: pkcs11, uri: "$1", mechanism: aes-gcm${2:-}}
EOF
}
# no_files: the error bucket holds no file at all (objects or temp files).
no_files() {
    if [ -d "$ERR_BUCKET" ] && [ -n "$(find "$ERR_BUCKET" -type f)" ]; then
        find "$ERR_BUCKET" -type f >&2
        fail "$1: files were left in the bucket"
    fi
}
# check_fault RC MSG...: put, get, kek list and rewrap all exit RC; each stderr of put/get names every MSG.
check_fault() {
    local want=$1 m
    shift
    expect_rc "$want" put new "$T/plain"
    cat "$T/out" "$T/err" >>"$T/all-output"
    for m in "$@"; do
        assert_contains "$T/err" "$m" "put: message"
    done
    [ ! -s "$T/out" ] || fail "put printed on stdout"
    expect_rc "$want" put --create new2 "$T/plain"
    expect_rc "$want" get existing
    cat "$T/out" "$T/err" >>"$T/all-output"
    for m in "$@"; do
        assert_contains "$T/err" "$m" "get: message"
    done
    [ ! -s "$T/out" ] || fail "get printed on stdout"
    expect_rc "$want" kek list
    cat "$T/out" "$T/err" >>"$T/all-output"
    assert_contains "$T/out" "unreachable" "kek list shows the key as unreachable"
    assert_contains "$T/out" "error: " "kek list gives the reason"
    expect_rc "$want" rewrap
    cat "$T/out" "$T/err" >>"$T/all-output"
    no_files "$*"
}

# ---- wrong PIN ----
WRONG_URI="pkcs11:token=terr;object=kek?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-wrong"
err_config "$WRONG_URI"
check_fault 4 "login failed" "CKR_PIN_INCORRECT"
# the right PIN still works (no lockout from the attempts above)
"$NS_CLI" -c "$T/good.yaml" get existing >"$T/got" || fail "get with the right PIN after wrong ones"
cmp "$T/got" "$T/plain" || fail "get with the right PIN: content differs"
# wrong PIN through pin_env and through pin-value
err_config "pkcs11:token=terr;object=kek?module-path=$SOFTHSM_MODULE" ", pin_env: NS_TEST_PIN"
export NS_TEST_PIN=12345678
check_fault 4 "login failed"
unset NS_TEST_PIN
err_config "pkcs11:token=terr;object=kek?module-path=$SOFTHSM_MODULE&pin-value=98765432"
check_fault 4 "login failed"
assert_not_contains "$T/all-output" "98765432" "a wrong pin-value is printed"

# ---- missing token ----
err_config "pkcs11:token=nosuch;object=kek?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-terr"
check_fault 5 "token=nosuch" "token unavailable"

# ---- module-path problems ----
err_config "pkcs11:token=terr;object=kek?module-path=$T/no-such-module.so&pin-source=file:$T/pin-terr"
check_fault 5 "$T/no-such-module.so"
err_config "pkcs11:token=terr;object=kek?module-path=$T/not-a-module.so&pin-source=file:$T/pin-terr"
check_fault 5 "$T/not-a-module.so"
err_config "pkcs11:token=terr;object=kek?module-path=$LIBCRYPTO&pin-source=file:$T/pin-terr"
check_fault 5 "$LIBCRYPTO" "not a PKCS#11 module"

# ---- no PIN source, or an unusable one ----
err_config "pkcs11:token=terr;object=kek?module-path=$SOFTHSM_MODULE"
check_fault 4 "needs a PIN"
err_config "pkcs11:token=terr;object=kek?module-path=$SOFTHSM_MODULE" ", pin_env: NS_TEST_PIN_UNSET"
check_fault 4 "NS_TEST_PIN_UNSET"
err_config "pkcs11:token=terr;object=kek?module-path=$SOFTHSM_MODULE&pin-source=file:$T/no-such-pin"
check_fault 4 "$T/no-such-pin"
err_config "pkcs11:token=terr;object=kek?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-0644"
check_fault 4 "$T/pin-0644" "chmod 600"
err_config "pkcs11:token=terr;object=kek?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-0640"
check_fault 4 "$T/pin-0640"
err_config "pkcs11:token=terr;object=kek?module-path=$SOFTHSM_MODULE&pin-source=file:pin-terr"
check_fault 8 "absolute"

# ---- key object problems ----
err_config "pkcs11:token=terr;object=nosuch?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-terr"
check_fault 5 "object=nosuch" "missing"
err_config "pkcs11:token=terr;object=twin?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-terr"
check_fault 5 "more than one"
err_config "pkcs11:token=terr?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-terr"
check_fault 8 "names no key"

# ---- not a PKCS#11 URI: a config error ----
err_config "file:///etc/passwd"
for cmd in "put new $T/plain" "get existing" "kek list" "rewrap" "verify"; do
    # shellcheck disable=SC2086
    expect_rc 2 $cmd
    assert_contains "$T/err" "config.yaml:3:" "a non-PKCS#11 URI: the message names the line"
    assert_contains "$T/err" "pkcs11:" "a non-PKCS#11 URI: the message says what is expected"
done
no_files "a non-PKCS#11 URI"

# ---- the same faults on an old key stop the strict commands too ----
for bad in "pkcs11:token=terr;object=kek?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-wrong|4" \
    "pkcs11:token=nosuch;object=kek?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-terr|5" \
    "pkcs11:token=terr;object=nosuch?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-terr|5"; do
    ns_config <<EOF
cluster_id: terr
storage: {backend: file, path: $ERR_BUCKET}
encryption_key: {source: file, path: $T/soft.key}
old_encryption_keys:
  - {source: pkcs11, uri: "${bad%|*}", mechanism: aes-gcm}
EOF
    [ -f "$T/soft.key" ] || (
        umask 077
        head -c 32 /dev/urandom >"$T/soft.key"
    )
    expect_rc "${bad##*|}" put new "$T/plain"
    expect_rc "${bad##*|}" kek list
    assert_contains "$T/out" "unreachable" "kek list: the old key is unreachable"
    awk '$1 == "primary" && $4 == "reachable" { ok = 1 } END { exit !ok }' "$T/out" ||
        fail "kek list: the primary should still be reachable"
    no_files "old key ${bad%|*}"
done

# ---- kek generate hits the same faults ----
expect_rc 4 kek generate --uri "pkcs11:token=terr;object=gen-new?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-wrong" \
    --mechanism aes-gcm
assert_contains "$T/err" "login failed" "kek generate with a wrong PIN"
expect_rc 5 kek generate --uri "pkcs11:token=nosuch;object=gen-new?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-terr" \
    --mechanism aes-kwp
expect_rc 5 kek generate --uri "pkcs11:token=terr;object=gen-new?module-path=$T/no-such-module.so&pin-source=file:$T/pin-terr" \
    --mechanism rsa-oaep
assert_contains "$T/err" "$T/no-such-module.so" "kek generate names the missing module"
expect_rc 4 kek generate --uri "pkcs11:token=terr;object=gen-new?module-path=$SOFTHSM_MODULE" --mechanism aes-gcm
expect_rc 4 kek generate --uri "pkcs11:token=terr;object=gen-new?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-0644" \
    --mechanism aes-gcm
expect_rc 2 kek generate --uri "pkcs11:token=terr?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-terr" \
    --mechanism aes-gcm
assert_contains "$T/err" "object=" "kek generate without object= says what is missing"
ns_p11 terr "$PIN" --list-objects || fail "pkcs11-tool --list-objects"
assert_not_contains "$T/p11.out" "gen-new" "a failed kek generate created a key"

# ---- the good config still works, and nothing ever printed the PIN ----
"$NS_CLI" -c "$T/good.yaml" get existing >"$T/got" || fail "get with the good config at the end"
cmp "$T/got" "$T/plain" || fail "get with the good config at the end: content differs"
assert_not_contains "$T/all-output" "$PIN" "the PIN appears in an error message"
no_files "the whole run"
echo "# PASS cli-token-errors"
