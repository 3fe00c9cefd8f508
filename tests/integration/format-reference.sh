#!/usr/bin/env bash
# Covers: the envelope bytes written by the CLI match doc/envelope.md, checked by an independent decoder
# (contrib/envelope-decode.py, python3-cryptography) that opens them with a software KEK, refuses them
# under another name, and agrees on the KEK id that `kek list` prints.
. "$top_srcdir/tests/integration/lib.sh"
ns_setup

dec="$top_srcdir/contrib/envelope-decode.py"
ns_need_py cryptography

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/kek.hex"
chmod 600 "$T/kek.hex"
ns_config "$T/config.yaml" <<CONF
cluster_id: t
storage:
  backend: file
  path: $T/bucket
encryption_key:
  source: file
  path: $T/kek.hex
CONF

head -c 5000 /dev/urandom >"$T/secret.bin"
expect_rc 0 put tenants/acme/db.key "$T/secret.bin"
blob="$T/bucket/cluster/secret/tenants/acme/db.key"

python3 "$dec" "$blob" cluster/secret/tenants/acme/db.key --key "$T/kek.hex" >"$T/decoded" 2>"$T/fields" ||
    fail "the reference decoder could not open a blob written by the CLI: $(cat "$T/fields")"
cmp -s "$T/decoded" "$T/secret.bin" || fail "reference decoder output differs from the plaintext"

if python3 "$dec" "$blob" cluster/secret/tenants/acme/other --key "$T/kek.hex" >/dev/null 2>"$T/err2"; then
    fail "the reference decoder opened the blob under another name"
fi
assert_contains "$T/err2" "integrity check failed" "renamed blob refused by the reference decoder"

expect_rc 0 kek list
id=$(awk '$1 == "primary" { print $2 }' "$T/out")
[ -n "$id" ] || fail "kek list printed no primary id"
assert_contains "$T/fields" "kek id       $id" "the decoder and kek list agree on the KEK id"
assert_contains "$T/fields" "mechanism    4 (software-aes-gcm)" "software KEK mechanism byte"
echo "# format-reference: ok"
