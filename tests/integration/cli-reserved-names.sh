#!/usr/bin/env bash
# Regression (issue 12, item 10: `put` clobbers internal secrets): `put registration-nonce.key FILE` replaced
# the typed nonce-key document with a raw blob, and the server then failed to load nonce keys on every
# refresh. Now the internal secrets (ca.key, registration-nonce.key) are reserved for their own commands:
# `put` and `delete` refuse them (exit 8, a message naming the commands that own them) and the objects stay
# byte for byte; nonces and certificates are still issued. `put` over any other typed secret (one `secret
# create` made) is refused too (exit 7, unchanged): `secret rotate` changes it, `delete` removes it first.
# What still works: `put` of new names and over plain blobs, `put --create`, `delete` of plain blobs and of
# custom typed secrets, and the owning commands (`secret rotate registration-nonce.key`, `ca rotate`).
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need sha256sum
ns_server_config "$T/config.yaml" "$T/cache"
SECRETS=$T/bucket/cluster/secret
expect_rc 0 ca init
expect_rc 0 secret create registration-nonce.key --type ed25519
expect_rc 0 secret create k8s-sa.key --type ed25519
printf 'not a key document\n' >"$T/raw"

sums() {
    (cd "$SECRETS" && sha256sum ca.key registration-nonce.key k8s-sa.key)
}
sums >"$T/before"

for name in registration-nonce.key ca.key; do
    expect_rc 8 put "$name" "$T/raw"
    assert_contains "$T/err" "$name is reserved" "put $name: the message names the reservation"
    assert_contains "$T/err" "\`put\` does not touch it" "put $name: the message says put leaves it"
    expect_rc 8 put "$name" "$T/raw" --create
    expect_rc 8 delete "$name"
    assert_contains "$T/err" "\`delete\` does not touch it" "delete $name: the message"
done
assert_contains "$T/err" "\`ca init\`" "the CA key's message names the ca commands"

# A custom typed secret: put refuses, the document stays.
expect_rc 7 put k8s-sa.key "$T/raw"
assert_contains "$T/err" "k8s-sa.key is a typed secret" "put over a typed secret: the message"
sums >"$T/after"
cmp -s "$T/before" "$T/after" || fail "a refused put or delete changed an internal secret"

# The owners still work, and the keys are still usable.
expect_rc 0 nonce issue --kind agent --sub vm-1 --tenant acme --group web --config-hash 0123abcd0123abcd
expect_rc 0 secret rotate registration-nonce.key
expect_rc 0 secret show registration-nonce.key
expect_rc 0 nonce issue --kind agent --sub vm-2 --tenant acme --group web --config-hash 0123abcd0123abcd
expect_rc 0 secret export k8s-sa.key --format pem-bundle

# Plain blobs: put creates, replaces, --create refuses an existing one (7); delete removes it.
expect_rc 0 put tunnel.json "$T/raw"
printf 'v2\n' | expect_rc 0 put tunnel.json
expect_rc 0 get tunnel.json
assert_eq "$(cat "$T/out")" "v2" "put replaced a plain blob"
expect_rc 7 put tunnel.json "$T/raw" --create
expect_rc 0 delete tunnel.json
expect_rc 3 get tunnel.json

# delete of a custom typed secret is allowed (explicit removal), after which put stores a plain blob there.
expect_rc 0 delete k8s-sa.key
expect_rc 0 put k8s-sa.key "$T/raw"
expect_rc 0 get k8s-sa.key
assert_eq "$(cat "$T/out")" "not a key document" "put after delete"

# Names that only look different are refused by the name check (8), never mapped onto a reserved name.
expect_rc 8 put ./registration-nonce.key "$T/raw"
expect_rc 8 put registration-nonce.key/ "$T/raw"
expect_rc 8 put x/../ca.key "$T/raw"
[ "$(cd "$SECRETS" && sha256sum ca.key)" = "$(grep ' ca.key$' "$T/before")" ] || fail "ca.key changed"
echo "PASS"
