#!/usr/bin/env bash
# Covers: `nstance-secrets config check` (issue 16) and the example configs of contrib/examples/.
#   1. Each example, with /etc/nstance, /var/lib/nstance, /var/cache/nstance-secrets and the token module
#      paths moved into a temp dir, passes `config check` (exit 0, "FILE: ok").
#   2. config check touches nothing: the store folder and cache_dir are not created, the PIN file and the
#      token module need not exist, no network (the Vault and HSM examples name hosts and modules that do
#      not exist here, and the S3 one a bucket), and it takes no PIN from the environment.
#   3. A broken config exits 2 with FILE:LINE and the key in the message; a missing file exits 2; `config`
#      without `check` and `config check extra` are usage errors (2).
set -euo pipefail
. "$top_srcdir/tests/integration/lib.sh"
ns_setup

cli=$top_builddir/nstance-secrets
n=0
for ex in "$top_srcdir"/contrib/examples/*.yaml; do
    name=$(basename "$ex")
    sed -e "s#/etc/nstance#$T/etc#g" -e "s#/var/lib/nstance#$T/lib#g" -e "s#/var/cache/nstance-secrets#$T/cache#g" \
        -e "s#module-path=/[^&\"]*#module-path=$T/no-such-module.so#g" "$ex" >"$T/$name"
    grep -q "$T" "$T/$name" || fail "$name: no path was substituted"
    out=$(env -u NSTANCE_HSM_PIN "$cli" -c "$T/$name" config check 2>&1) || fail "$name: config check: $out"
    [ "$out" = "$T/$name: ok" ] || fail "$name: config check printed '$out'"
    for d in "$T/lib" "$T/cache" "$T/etc"; do
        [ ! -e "$d" ] || fail "$name: config check created $d"
    done
    n=$((n + 1))
done
[ "$n" -ge 4 ] || fail "only $n example configs"
echo "ok: $n example configs pass config check without creating anything"

# A bad key: exit 2, file:line and the key named.
sed 's/^  backend: file$/  backend: file\n  bogus_key: 1/' "$T/dev-softhsm.yaml" >"$T/bad.yaml"
grep -q bogus_key "$T/bad.yaml" || fail "bad.yaml not made"
line=$(grep -n bogus_key "$T/bad.yaml" | cut -d: -f1)
rc=0
"$cli" -c "$T/bad.yaml" config check >"$T/out" 2>"$T/err" || rc=$?
[ "$rc" = 2 ] || fail "bad config: exit $rc, want 2"
grep -q "$T/bad.yaml:$line: .*bogus_key" "$T/err" || fail "bad config: no file:line: $(cat "$T/err")"
[ ! -s "$T/out" ] || fail "bad config printed on stdout"
# A wrong mechanism value: also exit 2.
sed 's/mechanism: aes-gcm/mechanism: aes-cbc/' "$T/dev-softhsm.yaml" >"$T/bad2.yaml"
rc=0
"$cli" -c "$T/bad2.yaml" config check >/dev/null 2>"$T/err" || rc=$?
[ "$rc" = 2 ] && grep -q "$T/bad2.yaml:[0-9]" "$T/err" || fail "bad mechanism: exit $rc: $(cat "$T/err")"
rc=0
"$cli" -c "$T/none.yaml" config check >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "missing config: exit $rc, want 2"
for args in "config" "config check extra" "config verify"; do
    rc=0
    # shellcheck disable=SC2086
    "$cli" -c "$T/dev-softhsm.yaml" $args >/dev/null 2>&1 || rc=$?
    [ "$rc" = 2 ] || fail "'$args': exit $rc, want 2"
done
echo "ok: bad configs exit 2 with file:line; usage errors exit 2"
