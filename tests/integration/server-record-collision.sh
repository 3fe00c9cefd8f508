#!/usr/bin/env bash
# Regression test, issue 12 item 1 ("cross-tenant files through record-name collisions"). Records were named
# <tenant>.<sub>.json, so tenant "acme.web" with agent "1" and tenant "acme" with agent "web.1" shared one
# record: the second registration replaced the first's, and the first then got the second's group's files.
# Covers, through the real server: the two identities (groups web and cp) each get only their own group's
# template and each has its own record; a record edited to name another tenant or sub than the certificate
# is refused (403 forbidden, a log line naming the record) on files and renew; a record of the old layout is
# used and moved to the new name by its own identity only — one whose stored tenant/sub is another identity's
# (the old names collide) is never used (404) and left where it is.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need curl openssl python3
ns_need_py cryptography
CL="python3 $top_srcdir/tests/tools/srvclient.py"

# config.yaml (the CLI's) has no key newer than the bug, so that this test also runs against a build from
# before the fix (the regression check); the second server also turns the renewal limit off.
ns_server_config "$T/config.yaml" "$T/cache1"
NS_SERVER_EXTRA='  renew_min_interval: 0s' ns_server_config "$T/config-norenewlimit.yaml" "$T/cache1"
expect_rc 0 ca init
expect_rc 0 secret create registration-nonce.key --type ecdsa-p256
expect_rc 0 secret create k8s-sa.key --type ed25519
expect_rc 0 secret create web.key --type ecdsa-p256
expect_rc 0 ca bundle -o "$T/ca.pem"
ns_server_start a "$T/config.yaml"
PA=$SRV_PORT
PID=$SRV_PID
ns_server_ready "$PA"
INST=$T/bucket/shard/s1/instance

nonce() { # ARGS for nonce issue; prints the JWT
    expect_rc 0 nonce issue "$@" >&2
    cat "$T/out"
}
files() { # NAME: status of GET /v1/agent/files with $T/NAME.{crt,key}; the answer in $T/NAME.files
    ns_https "$T/$1.files" --cert "$T/$1.crt" --key "$T/$1.key" "https://127.0.0.1:$PA/v1/agent/files"
}
paths() { # NAME: the paths of the files answer
    python3 -c 'import json,sys; print(" ".join(f["path"] for f in json.load(open(sys.argv[1]))["files"]))' \
        "$T/$1.files"
}

# ---- two identities whose old record names collide ----
N1=$(nonce --kind agent --sub 1 --tenant acme.web --shard s1 --group web)
assert_eq "$(ns_server_register "$PA" w1 "$N1")" 200 "acme.web/1 registers (group web)"
N2=$(nonce --kind agent --sub web.1 --tenant acme --shard s1 --group cp)
assert_eq "$(ns_server_register "$PA" a1 "$N2")" 200 "acme/web.1 registers (group cp)"
assert_eq "$(files w1)" 200 "acme.web/1 files"
assert_eq "$(paths w1)" "/etc/web/tls.key" "acme.web/1 gets its own group's template (worker), not acme/web.1's"
assert_eq "$(files a1)" 200 "acme/web.1 files"
assert_eq "$(paths a1)" "/etc/kubernetes/pki/sa.key /etc/nstance/ca.crt" "acme/web.1 gets control-plane"
assert_eq "$($CL field "$INST/acme.web/1.json" tenant)" acme.web "acme.web/1 has a record of its own"
assert_eq "$($CL field "$INST/acme/web.1.json" tenant)" acme "acme/web.1 has a record of its own"
[ ! -e "$INST/acme.web.1.json" ] || fail "a record under the ambiguous old name was written"

# ---- a record that does not name the certificate's identity is refused ----
# Restart with the renewal limit off (the renew below comes right after the registration).
ns_server_stop "$PID"
ns_server_start a2 "$T/config-norenewlimit.yaml"
PA=$SRV_PORT
PID=$SRV_PID
ns_server_ready "$PA"
cp "$INST/acme/web.1.json" "$T/a1.rec"
for member in tenant sub kind; do
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d[sys.argv[2]]="other"; json.dump(d, open(sys.argv[3], "w"))' \
        "$T/a1.rec" "$member" "$INST/acme/web.1.json"
    assert_eq "$(files a1)" 403 "files: record with another $member"
    assert_eq "$($CL field "$T/a1.files" error)" forbidden "files: record with another $member: error code"
    code=$(ns_https "$T/a1.renew" --cert "$T/a1.crt" --key "$T/a1.key" --data-binary '{}' \
        "https://127.0.0.1:$PA/v1/agent/renew")
    assert_eq "$code" 403 "renew: record with another $member"
done
assert_contains "$T/a2.log" "the registration record shard/s1/instance/acme/web.1.json does not name the certificate's tenant, sub and kind; refused" \
    "the refusal is logged with the record's name"
cp "$T/a1.rec" "$INST/acme/web.1.json"
assert_eq "$(files a1)" 200 "files once the record is restored"

# ---- migration of records of the old layout ----
# m.x/1 registers; its record is then put where a server before this fix wrote it (m.x.1.json).
N3=$(nonce --kind agent --sub 1 --tenant m.x --shard s1 --group web)
assert_eq "$(ns_server_register "$PA" mx1 "$N3")" 200 "m.x/1 registers"
mv "$INST/m.x/1.json" "$INST/m.x.1.json"
cp "$INST/m.x.1.json" "$T/mx1.rec"
# m/x.1 has a valid agent certificate but no record; the old name m.x.1.json is also "its" old name.
openssl genpkey -algorithm ed25519 -out "$T/mx-other.key" 2>/dev/null
openssl pkey -in "$T/mx-other.key" -pubout -out "$T/mx-other.pub"
expect_rc 0 ca issue --public-key "$T/mx-other.pub" --cn x.1 --tenant m --role agent -o "$T/mx-other.crt"
assert_eq "$(files mx-other)" 404 "m/x.1 does not get the old-name record of m.x/1"
cmp -s "$INST/m.x.1.json" "$T/mx1.rec" || fail "the other identity's old-name record was changed"
[ ! -e "$INST/m/x.1.json" ] || fail "another identity's old-name record was moved to m/x.1"
assert_contains "$T/a2.log" "the registration record shard/s1/instance/m.x.1.json (old name) is another identity's; not used" \
    "the refused migration is logged"
# Its own identity uses it, and it moves.
assert_eq "$(files mx1)" 200 "m.x/1 files through its old-name record"
assert_eq "$(paths mx1)" "/etc/web/tls.key" "m.x/1 gets its group's template"
[ -f "$INST/m.x/1.json" ] || fail "the old-name record was not moved to the new name"
[ ! -e "$INST/m.x.1.json" ] || fail "the old-name record is still there after the move"
cmp -s "$INST/m.x/1.json" "$T/mx1.rec" || fail "the moved record's content changed"
assert_contains "$T/a2.log" "the registration record shard/s1/instance/m.x.1.json moved to shard/s1/instance/m.x/1.json" \
    "the move is logged"
assert_eq "$(files mx1)" 200 "m.x/1 files through the moved record"

# Operators: the same layout under cluster/operator/.
NO1=$(nonce --kind operator --sub bob --tenant ops.eu)
assert_eq "$(ns_server_register "$PA" op1 "$NO1")" 200 "operator ops.eu/bob"
NO2=$(nonce --kind operator --sub eu.bob --tenant ops)
assert_eq "$(ns_server_register "$PA" op2 "$NO2")" 200 "operator ops/eu.bob"
[ -f "$T/bucket/cluster/operator/ops.eu/bob.json" ] && [ -f "$T/bucket/cluster/operator/ops/eu.bob.json" ] ||
    fail "the two operators do not have a record each"
for o in op1 op2; do
    code=$(ns_https "$T/$o.renew" --cert "$T/$o.crt" --key "$T/$o.key" --data-binary '{}' \
        "https://127.0.0.1:$PA/v1/operator/renew")
    assert_eq "$code" 200 "operator $o renews with its own record"
done

ns_server_stop "$PID"
assert_eq "$NS_RC" 0 "SIGTERM exit status (a sanitizer report would change it)"
echo "PASS"
