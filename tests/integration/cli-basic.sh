#!/usr/bin/env bash
# Covers: put/get/list/delete round trips, names, 1 MiB limit, get -o, usage/config errors, no plaintext/PIN leaks.
#
# In detail: `kek generate` (aes-gcm) on a fresh SoftHSM token; put from stdin and from FILE (text, binary with
# NUL bytes, exactly 1 MiB) and get back byte for byte; 1 MiB + 1 byte refused (exit 8, nothing stored);
# get -o FILE (mode 0600, exact content, replaces an existing file); get of a missing name (3); put --create
# on an existing name (7, content unchanged); list and list PREFIX with '/' names; delete (then get: 3;
# missing: 3); invalid names (8, nothing written); usage errors (2); missing config (2); unknown config key
# (2, message names the line); the stored file does not contain the plaintext; the PIN never appears in
# any stdout/stderr of any command run here (including -v -v, errors, kek list, a pin-value URI).
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

PIN="Qz7pinValue-5521"
ns_token tk "$PIN"
URI="pkcs11:token=tk;object=kek-1?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-tk"
BUCKET=$T/bucket
SECRETS=$BUCKET/cluster/secret

# Every output of every command run here goes to $T/all-output, which must never contain the PIN.
: >"$T/all-output"
collect() {
    cat "$T/out" "$T/err" >>"$T/all-output"
}
# rc N ARGS...: expect_rc, then keep the outputs for the PIN check.
rc() {
    expect_rc "$@"
    collect
}
# raw OUT-PREFIX ARGS...: run the CLI with its own arguments (no -c added); stdout/stderr in PREFIX.out/.err.
raw() {
    local p=$1
    shift
    printf '# step: nstance-secrets'
    printf ' %q' "$@"
    printf '\n'
    NS_RC=0
    "$NS_CLI" "$@" >"$p.out" 2>"$p.err" </dev/null || NS_RC=$?
    cat "$p.out" "$p.err" >>"$T/all-output"
}
# bucket_files: every regular file under the bucket (objects and any temp files), sorted.
bucket_files() {
    if [ -d "$BUCKET" ]; then
        (cd "$BUCKET" && find . -type f | LC_ALL=C sort)
    fi
}

# ---- kek generate ----
ns_config <<EOF
cluster_id: basic
storage: {backend: file, path: $BUCKET}
encryption_key: {source: pkcs11, uri: "$URI", mechanism: aes-gcm}
EOF
rc 0 kek generate --uri "$URI" --mechanism aes-gcm
if ! grep -Eq '^generated aes-gcm key, id [0-9a-f]{32}$' "$T/out"; then
    cat "$T/out" >&2
    fail "kek generate: unexpected output"
fi
KEK_ID=$(sed -n 's/^generated aes-gcm key, id \([0-9a-f]*\)$/\1/p' "$T/out")
rc 0 kek list
assert_contains "$T/out" "$KEK_ID" "kek list shows the generated id"
assert_contains "$T/out" "reachable" "kek list: the new key is reachable"
assert_not_contains "$T/out" "unreachable" "kek list: the new key is reachable"
rc 0 -v -v kek list

# ---- put/get round trips ----
MARK=plaintext-marker-8c1f27d4e9
printf 'hello %s\n' "$MARK" >"$T/p-text"
rc 0 put greeting <"$T/p-text"
[ -f "$SECRETS/greeting" ] || fail "put greeting did not create $SECRETS/greeting"
rc 0 get greeting
cmp "$T/out" "$T/p-text" || fail "get greeting: content differs (stdin put)"

# binary with NUL bytes, from FILE
python3 -c '
import sys
data = b"\x00\x01\x00binary\x00\xff\xfe" + bytes(range(256)) * 3 + b"\x00"
sys.stdout.buffer.write(data)' >"$T/p-bin"
rc 0 put bin/nul.dat "$T/p-bin"
rc 0 get bin/nul.dat
cmp "$T/out" "$T/p-bin" || fail "get bin/nul.dat: binary content differs"
[ "$(stat -c %s "$T/out")" = "$(stat -c %s "$T/p-bin")" ] || fail "binary length differs"

# explicit '-' for stdin
rc 0 put dash - <"$T/p-bin"
rc 0 get dash
cmp "$T/out" "$T/p-bin" || fail "get dash: content differs"

# empty secret
rc 0 put empty </dev/null
rc 0 get empty
[ ! -s "$T/out" ] || fail "get empty: expected no output"

# exactly 1 MiB (the limit), from FILE and from stdin
head -c 1048576 /dev/urandom >"$T/p-1m"
rc 0 put big/onemib "$T/p-1m"
rc 0 get big/onemib
cmp "$T/out" "$T/p-1m" || fail "get big/onemib: content differs"
rc 0 put big/onemib-stdin <"$T/p-1m"
rc 0 get big/onemib-stdin
cmp "$T/out" "$T/p-1m" || fail "get big/onemib-stdin: content differs"

# 1 MiB + 1 byte: refused with exit 8, nothing stored (neither from FILE nor stdin)
cat "$T/p-1m" <(printf x) >"$T/p-1m1"
[ "$(stat -c %s "$T/p-1m1")" = 1048577 ] || fail "test setup: 1 MiB + 1 file has the wrong size"
before=$(bucket_files)
rc 8 put big/toolarge "$T/p-1m1"
assert_contains "$T/err" "larger than" "oversize put names the limit"
rc 8 put big/toolarge <"$T/p-1m1"
[ ! -e "$SECRETS/big/toolarge" ] || fail "an oversize put stored big/toolarge"
assert_eq "$(bucket_files)" "$before" "an oversize put changed the bucket"
rc 3 get big/toolarge

# replace without --create
printf 'second version\n' >"$T/p-v2"
rc 0 put greeting "$T/p-v2"
rc 0 get greeting
cmp "$T/out" "$T/p-v2" || fail "put without --create did not replace the content"
rc 0 put greeting "$T/p-text"

# put FILE that does not exist: not found, nothing stored
rc 3 put nofile "$T/does-not-exist"
[ ! -e "$SECRETS/nofile" ] || fail "put of a missing FILE stored something"

# ---- the stored file does not contain the plaintext ----
[ -s "$SECRETS/greeting" ] || fail "no stored file for greeting"
if grep -rqF -- "$MARK" "$BUCKET"; then
    fail "the bucket contains the plaintext marker"
fi
if grep -qaF -- "binary" "$SECRETS/bin/nul.dat"; then
    fail "the stored binary blob contains plaintext"
fi
# and the stored blob is an envelope, not a copy
assert_eq "$(head -c 4 "$SECRETS/greeting")" "NSEN" "stored blob starts with the envelope magic"

# ---- get -o FILE ----
umask_saved=$(umask)
umask 000
rc 0 get greeting -o "$T/o-new"
umask "$umask_saved"
assert_file_mode "$T/o-new" 600
cmp "$T/o-new" "$T/p-text" || fail "get -o: content differs"
# an existing, world-readable file is replaced by a 0600 one with exactly the secret
printf 'old junk that is longer than the secret ......................................\n' >"$T/o-old"
chmod 0644 "$T/o-old"
rc 0 get bin/nul.dat -o "$T/o-old"
assert_file_mode "$T/o-old" 600
cmp "$T/o-old" "$T/p-bin" || fail "get -o over an existing file: content differs"
rc 0 get --output "$T/o-long" big/onemib
assert_file_mode "$T/o-long" 600
cmp "$T/o-long" "$T/p-1m" || fail "get --output: content differs"
[ ! -s "$T/out" ] || fail "get -o also wrote to stdout"
# a missing name with -o creates no output file
rc 3 get nosuch -o "$T/o-missing"
[ ! -e "$T/o-missing" ] || fail "get -o of a missing name created the output file"
if ls "$T"/.o-missing.ns-tmp.* >/dev/null 2>&1; then
    fail "get -o left a temp file"
fi

# ---- not found ----
rc 3 get nosuch
rc 3 get tenants/nosuch/key
[ ! -s "$T/out" ] || fail "get of a missing name wrote to stdout"

# ---- put --create ----
rc 0 put --create fresh "$T/p-text"
rc 0 get fresh
cmp "$T/out" "$T/p-text" || fail "put --create of a new name: content differs"
cp "$SECRETS/fresh" "$T/fresh.blob"
rc 7 put fresh "$T/p-v2" --create
cmp "$SECRETS/fresh" "$T/fresh.blob" || fail "put --create on an existing name changed the stored blob"
rc 0 get fresh
cmp "$T/out" "$T/p-text" || fail "put --create on an existing name changed the content"
rc 7 put --create fresh <"$T/p-v2"
rc 0 get fresh
cmp "$T/out" "$T/p-text" || fail "put --create (stdin) on an existing name changed the content"

# ---- list ----
rc 0 put tenants/acme/db.key <<<'acme db'
rc 0 put tenants/acme/tls.key <<<'acme tls'
rc 0 put tenants/zeta/db.key <<<'zeta db'
rc 0 put tenants-top <<<'top'
rc 0 get tenants/acme/db.key
assert_eq "$(cat "$T/out")" "acme db" "get tenants/acme/db.key"
[ -f "$SECRETS/tenants/acme/db.key" ] || fail "tenants/acme/db.key is not stored as nested folders"

rc 0 list
cat >"$T/want-list" <<'EOF'
big/onemib
big/onemib-stdin
bin/nul.dat
dash
empty
fresh
greeting
tenants-top
tenants/acme/db.key
tenants/acme/tls.key
tenants/zeta/db.key
EOF
diff -u "$T/want-list" "$T/out" || fail "list: unexpected names"

rc 0 list tenants/
printf '%s\n' tenants/acme/db.key tenants/acme/tls.key tenants/zeta/db.key >"$T/want"
diff -u "$T/want" "$T/out" || fail "list tenants/: unexpected names"

rc 0 list tenants/acme/
printf '%s\n' tenants/acme/db.key tenants/acme/tls.key >"$T/want"
diff -u "$T/want" "$T/out" || fail "list tenants/acme/: unexpected names"

rc 0 list tenants/acme/d
printf '%s\n' tenants/acme/db.key >"$T/want"
diff -u "$T/want" "$T/out" || fail "list tenants/acme/d: unexpected names"

rc 0 list tenants
printf '%s\n' tenants-top tenants/acme/db.key tenants/acme/tls.key tenants/zeta/db.key >"$T/want"
diff -u "$T/want" "$T/out" || fail "list tenants: unexpected names"

rc 0 list nomatch/
[ ! -s "$T/out" ] || fail "list nomatch/: expected no names"

# ---- delete ----
rc 0 delete tenants/acme/tls.key
[ ! -e "$SECRETS/tenants/acme/tls.key" ] || fail "delete left the file"
rc 3 get tenants/acme/tls.key
rc 3 delete tenants/acme/tls.key
rc 3 delete never-existed
rc 0 list tenants/acme/
printf '%s\n' tenants/acme/db.key >"$T/want"
diff -u "$T/want" "$T/out" || fail "list after delete: unexpected names"
rc 0 get tenants/acme/db.key
assert_eq "$(cat "$T/out")" "acme db" "delete removed only its own name"

# ---- invalid names: exit 8, nothing written anywhere in the bucket ----
before=$(bucket_files)
for bad in "../x" "/abs" "a//b" ".hidden" "" "a/../b" "a/.b" "a/" "x/./y" "sp ace" "a\\b"; do
    rc 8 put "$bad" <"$T/p-text"
    assert_contains "$T/err" "invalid name" "put '$bad' names the problem"
    rc 8 get "$bad"
    rc 8 delete "$bad"
    rc 8 put "$bad" "$T/p-text" --create
done
assert_eq "$(bucket_files)" "$before" "an invalid name changed the bucket"
[ ! -e "$BUCKET/cluster/x" ] || fail "put ../x wrote outside cluster/secret"
[ ! -e "/abs" ] || fail "put /abs wrote to /abs"
[ ! -e "$T/x" ] || fail "put ../x wrote outside the bucket"
rc 8 list ../

# ---- usage errors: exit 2 ----
raw "$T/u" -c "$T/config.yaml"
assert_eq "$NS_RC" 2 "no command"
assert_contains "$T/u.err" "usage:" "no command prints the usage"
raw "$T/u"
assert_eq "$NS_RC" 2 "no arguments at all"
rc 2 frobnicate
assert_contains "$T/err" "unknown command" "unknown command"
raw "$T/u" -c "$T/config.yaml" --no-such-option list
assert_eq "$NS_RC" 2 "unknown global option"
rc 2 put
rc 2 put a b c
rc 2 put --bogus a
rc 2 get
rc 2 get a b
rc 2 get a -o
rc 2 get --bogus a
rc 2 list a b
rc 2 delete
rc 2 delete a b
rc 2 kek
rc 2 kek frobnicate
rc 2 kek list extra
rc 2 kek generate --uri "$URI"
rc 2 kek generate --mechanism aes-gcm
rc 2 kek generate --uri "$URI" --mechanism des3
rc 2 kek generate --uri "$URI" --mechanism aes-gcm extra
rc 2 kek generate --uri "pkcs11:token=tk?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-tk" --mechanism aes-gcm
assert_contains "$T/err" "has no object= to label the new key" "a new key needs a label"
rc 2 verify extra
rc 2 rewrap extra
raw "$T/u" --help
assert_eq "$NS_RC" 0 "--help"
assert_contains "$T/u.out" "usage:" "--help prints the usage"

# ---- config errors: exit 2 ----
raw "$T/c" -c "$T/no-such-config.yaml" get greeting
assert_eq "$NS_RC" 2 "missing config"
assert_contains "$T/c.err" "$T/no-such-config.yaml" "missing config: the message names the file"
raw "$T/c" -c "$T/no-such-config.yaml" list
assert_eq "$NS_RC" 2 "missing config (list)"
NSTANCE_SECRETS_CONFIG=$T/no-such-config.yaml raw "$T/c" list
assert_eq "$NS_RC" 2 "missing config from \$NSTANCE_SECRETS_CONFIG"
assert_contains "$T/c.err" "$T/no-such-config.yaml" "NSTANCE_SECRETS_CONFIG: the message names the file"
NSTANCE_SECRETS_CONFIG=$T/config.yaml raw "$T/c" get greeting
assert_eq "$NS_RC" 0 "config from \$NSTANCE_SECRETS_CONFIG"
cmp "$T/c.out" "$T/p-text" || fail "get with \$NSTANCE_SECRETS_CONFIG: content differs"

# unknown top-level key on line 4
ns_config "$T/bad1.yaml" <<EOF
cluster_id: basic
storage: {backend: file, path: $BUCKET}
encryption_key: {source: pkcs11, uri: "$URI", mechanism: aes-gcm}
colour: blue
EOF
raw "$T/c" -c "$T/bad1.yaml" get greeting
assert_eq "$NS_RC" 2 "unknown top-level key"
assert_contains "$T/c.err" "bad1.yaml:4:" "unknown key: the message names the file and line"
assert_contains "$T/c.err" "colour" "unknown key: the message names the key"
[ ! -s "$T/c.out" ] || fail "a bad config still printed the secret"

# unknown nested key on line 5
ns_config "$T/bad2.yaml" <<EOF
cluster_id: basic
storage:
  backend: file
  path: $BUCKET
  compression: zstd
encryption_key: {source: pkcs11, uri: "$URI", mechanism: aes-gcm}
EOF
raw "$T/c" -c "$T/bad2.yaml" list
assert_eq "$NS_RC" 2 "unknown storage key"
assert_contains "$T/c.err" "bad2.yaml:5:" "unknown nested key: the message names the line"
assert_contains "$T/c.err" "compression" "unknown nested key: the message names the key"

# unknown key inside encryption_key, line 6
ns_config "$T/bad3.yaml" <<EOF
cluster_id: basic
storage: {backend: file, path: $BUCKET}
encryption_key:
  source: pkcs11
  uri: "$URI"
  pin: "$PIN"
  mechanism: aes-gcm
EOF
raw "$T/c" -c "$T/bad3.yaml" get greeting
assert_eq "$NS_RC" 2 "unknown encryption_key key"
assert_contains "$T/c.err" "bad3.yaml:6:" "unknown encryption_key key: the message names the line"

# a PKCS#11 URI with a pin-value in the wrong place is withheld from the message
ns_config "$T/bad4.yaml" <<EOF
cluster_id: "pkcs11:token=tk?pin-value=$PIN"
storage: {backend: file, path: $BUCKET}
encryption_key: {source: pkcs11, uri: "$URI", mechanism: aes-gcm}
EOF
raw "$T/c" -c "$T/bad4.yaml" get greeting
assert_eq "$NS_RC" 2 "invalid cluster_id"
assert_contains "$T/c.err" "bad4.yaml:1:" "invalid cluster_id: the message names the line"
ns_config "$T/bad5.yaml" <<EOF
cluster_id: basic
storage: {backend: "pkcs11:token=tk?pin-value=$PIN", path: $BUCKET}
encryption_key: {source: pkcs11, uri: "$URI", mechanism: aes-gcm}
EOF
raw "$T/c" -c "$T/bad5.yaml" list
assert_eq "$NS_RC" 2 "unknown backend"
assert_contains "$T/c.err" "bad5.yaml:2:" "unknown backend: the message names the line"

# YAML syntax error
printf 'cluster_id: basic\nstorage: {backend: file, path: %s\n' "$BUCKET" >"$T/bad6.yaml"
raw "$T/c" -c "$T/bad6.yaml" list
assert_eq "$NS_RC" 2 "YAML syntax error"

# no encryption_key: list works (no key needed), put/get refuse with a config error
ns_config "$T/nokey.yaml" <<EOF
cluster_id: basic
storage: {backend: file, path: $BUCKET}
EOF
raw "$T/c" -c "$T/nokey.yaml" list tenants/acme/
assert_eq "$NS_RC" 0 "list without encryption_key"
assert_eq "$(cat "$T/c.out")" "tenants/acme/db.key" "list without encryption_key"
raw "$T/c" -c "$T/nokey.yaml" get greeting
assert_eq "$NS_RC" 2 "get without encryption_key"

# ---- the PIN through other routes: pin-value in a config URI, pin_env ----
ns_config "$T/pinvalue.yaml" <<EOF
cluster_id: basic
storage: {backend: file, path: $BUCKET}
encryption_key: {source: pkcs11, uri: "pkcs11:token=tk;object=kek-1?module-path=$SOFTHSM_MODULE&pin-value=$PIN", mechanism: aes-gcm}
EOF
raw "$T/c" -c "$T/pinvalue.yaml" -v -v get greeting
assert_eq "$NS_RC" 0 "get with pin-value in the config URI"
cmp "$T/c.out" "$T/p-text" || fail "get with pin-value: content differs"
raw "$T/c" -c "$T/pinvalue.yaml" -v -v kek list
assert_eq "$NS_RC" 0 "kek list with pin-value in the config URI"
assert_contains "$T/c.out" "pin-value=***" "kek list redacts pin-value"
ns_config "$T/pinvalue-bad.yaml" <<EOF
cluster_id: basic
storage: {backend: file, path: $BUCKET}
encryption_key: {source: pkcs11, uri: "pkcs11:token=tk;object=nosuch?module-path=$SOFTHSM_MODULE&pin-value=$PIN", mechanism: aes-gcm}
old_encryption_keys:
  - {source: pkcs11, uri: "pkcs11:token=nosuch;object=kek-1?module-path=$SOFTHSM_MODULE&pin-value=$PIN", mechanism: aes-gcm}
EOF
raw "$T/c" -c "$T/pinvalue-bad.yaml" -v -v kek list
assert_eq "$NS_RC" 5 "kek list with two unreachable keys"
assert_contains "$T/c.out" "unreachable" "kek list shows the unreachable keys"
raw "$T/c" -c "$T/pinvalue-bad.yaml" -v -v get greeting
assert_eq "$NS_RC" 5 "get with a missing key object"
raw "$T/c" -c "$T/pinvalue-bad.yaml" -v -v verify
raw "$T/c" -c "$T/pinvalue-bad.yaml" -v -v rewrap
# a wrong PIN in the URI: the wrong PIN does not appear either
ns_config "$T/wrongpin.yaml" <<EOF
cluster_id: basic
storage: {backend: file, path: $BUCKET}
encryption_key: {source: pkcs11, uri: "pkcs11:token=tk;object=kek-1?module-path=$SOFTHSM_MODULE&pin-value=Wr0ngPinValue77", mechanism: aes-gcm}
EOF
raw "$T/c" -c "$T/wrongpin.yaml" -v -v get greeting
assert_eq "$NS_RC" 4 "get with a wrong pin-value"
assert_not_contains "$T/c.err" "Wr0ngPinValue77" "a wrong PIN is not echoed"
ns_config "$T/pinenv.yaml" <<EOF
cluster_id: basic
storage: {backend: file, path: $BUCKET}
encryption_key: {source: pkcs11, uri: "pkcs11:token=tk;object=kek-1?module-path=$SOFTHSM_MODULE", mechanism: aes-gcm, pin_env: NS_TEST_PIN}
EOF
NS_TEST_PIN=$PIN raw "$T/c" -c "$T/pinenv.yaml" -v -v get greeting
assert_eq "$NS_RC" 0 "get with pin_env"
cmp "$T/c.out" "$T/p-text" || fail "get with pin_env: content differs"
NS_TEST_PIN=$PIN raw "$T/c" -c "$T/pinenv.yaml" -v -v kek list
assert_eq "$NS_RC" 0 "kek list with pin_env"
# pin-value on the kek generate command line is refused without echoing it
rc 2 kek generate --uri "pkcs11:token=tk;object=kek-2?module-path=$SOFTHSM_MODULE&pin-value=$PIN" --mechanism aes-gcm
assert_contains "$T/err" "pin-value" "kek generate names the refused pin-value"
rc 0 -v -v verify
assert_contains "$T/out" "kek $KEK_ID (primary): " "verify counts blobs under the generated key"
rc 0 -v -v put verbose "$T/p-text"
rc 0 -v -v get verbose

# ---- the PIN never appears in any output ----
[ -s "$T/all-output" ] || fail "collected no output at all"
assert_not_contains "$T/all-output" "$PIN" "the PIN appears in some command output"
echo "# PASS cli-basic"
