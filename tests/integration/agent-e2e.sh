#!/usr/bin/env bash
# Covers: the agent against the real nstance-secretsd (doc/agent.md, doc/protocol.md), CA key in SoftHSM.
#
# enroll: Ed25519 PKCS#8 key 0600 in a 0700 DIR, certificate CN/O from the nonce and for that key, CA bundle,
# nonce file deleted, registration record in the store. sync under a temp --root: contents equal
# `secret export` / the CA bundle, modes and groups as the template says, --on-change runs once, a second
# sync is a 304 ("unchanged") and runs nothing; `secret rotate` reaches the files on the next sync and
# --on-change runs once more. Refusals with their exit codes, each leaving DIR without an identity: the same
# nonce again (11), a nonce of another cluster (10), an expired nonce (10), a server that does not verify with --ca (4); sync
# without enrolling (3). A template whose path goes through a symbolic link below --root: exit 8, nothing
# written. enroll --hostname/--ipv4/--ipv6: the record's fields (and null without them), the certificate's DNS
# and IP SANs (none without them), kept by a renewal; bad values: exit 2 naming the option, before the nonce
# is read (no DIR, no record, nonce kept and usable after), and the server's 400 for them from another
# client. 50 agents enrolling at once: all succeed, 50 distinct certificates, 50 registration records. The
# server exits 0 on SIGTERM with no sanitizer report in its log.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
. "$top_srcdir/tests/integration/agent-lib.sh"
# 50 enrolls at once from one address and a renewal right after an enroll are part of this test.
AGENT_SERVER_EXTRA="  renew_min_interval: 0s
  register_burst: 200"
agent_setup
agent_server_start
ROOT=$T/root
mkdir -p "$ROOT"
HOOK="echo ran >>$T/hook.log"

# ---- enroll ----
agent_nonce vm-1 web "$T/nonce-1"
cp "$T/nonce-1" "$T/nonce-1.copy"
agent_rc 0 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-1" --dir "$T/a1"
[ ! -e "$T/nonce-1" ] || fail "the nonce file is still there after enrolling"
assert_file_mode "$T/a1" 700
assert_file_mode "$T/a1/identity.key" 600
assert_contains "$T/a1/identity.key" "-----BEGIN PRIVATE KEY-----"
openssl pkey -in "$T/a1/identity.key" -noout -text >"$T/pkey.txt" 2>&1 || fail "identity.key does not parse"
assert_contains "$T/pkey.txt" "ED25519"
openssl x509 -in "$T/a1/identity.crt" -noout -subject -pubkey >"$T/x509.txt"
assert_contains "$T/x509.txt" "CN = vm-1"
assert_contains "$T/x509.txt" "O = acme"
openssl pkey -in "$T/a1/identity.key" -pubout >"$T/pub.pem"
assert_contains "$T/x509.txt" "$(sed -n 2p "$T/pub.pem")"
openssl verify -CAfile "$T/a1/ca.crt" "$T/a1/identity.crt" >/dev/null || fail "identity.crt does not verify"
cmp -s "$T/a1/ca.crt" "$T/ca.crt" || fail "ca.crt is not the cluster's CA bundle"
[ -f "$T/bucket/shard/s1/instance/acme/vm-1.json" ] || fail "no registration record for vm-1"
ls -a "$T/a1" | grep -q 'ns-tmp' && fail "a temporary file is left in DIR"

# ---- sync ----
agent_rc 0 sync --server "$SRV_URL" --dir "$T/a1" --root "$ROOT" --on-change "$HOOK"
assert_contains "$T/aout" "4 file(s), 4 changed"
expect_rc 0 secret export app.key --format pem-bundle -o "$T/exp.pem"
expect_rc 0 secret export app.key --format jwks -o "$T/exp.jwks"
expect_rc 0 secret export app.tok --format raw -o "$T/exp.tok"
cmp -s "$ROOT/etc/app/tls/app.pem" "$T/exp.pem" || fail "app.pem differs from secret export"
cmp -s "$ROOT/etc/app/app.jwks" "$T/exp.jwks" || fail "app.jwks differs from secret export"
cmp -s "$ROOT/etc/app/token" "$T/exp.tok" || fail "token differs from secret export"
cmp -s "$ROOT/etc/app/ca.crt" "$T/ca.crt" || fail "ca.crt differs from the CA bundle"
assert_file_mode "$ROOT/etc/app/tls/app.pem" 600
assert_file_mode "$ROOT/etc/app/app.jwks" 644
assert_file_mode "$ROOT/etc/app/token" 640
assert_eq "$(stat -c %G "$ROOT/etc/app/token")" daemon "token's group"
assert_eq "$(stat -c %U "$ROOT/etc/app/token")" root "token's owner"
assert_eq "$(wc -l <"$T/hook.log")" 1 "--on-change ran once"
[ "$(wc -c <"$T/a1/files.version")" = 65 ] || fail "files.version is not 64 hex digits and a newline"

agent_rc 0 sync --server "$SRV_URL" --dir "$T/a1" --root "$ROOT" --on-change "$HOOK"
assert_contains "$T/aout" "sync: unchanged"
assert_eq "$(wc -l <"$T/hook.log")" 1 "--on-change did not run for an unchanged sync"

# ---- rotation reaches the files on the next sync ----
old_ver=$(cat "$T/a1/files.version")
expect_rc 0 secret rotate app.key
expect_rc 0 secret export app.key --format pem-bundle -o "$T/exp2.pem"
cmp -s "$T/exp.pem" "$T/exp2.pem" && fail "rotation did not change the export"
for i in $(seq 1 30); do
    agent_rc 0 sync --server "$SRV_URL" --dir "$T/a1" --root "$ROOT" --on-change "$HOOK"
    grep -q "file(s)" "$T/aout" && break
    sleep 0.5 # the server re-reads secrets every cache_check (1s)
done
assert_contains "$T/aout" "4 file(s), 2 changed"
cmp -s "$ROOT/etc/app/tls/app.pem" "$T/exp2.pem" || fail "app.pem is not the rotated bundle"
cmp -s "$ROOT/etc/app/token" "$T/exp.tok" || fail "token changed without a rotation"
assert_eq "$(wc -l <"$T/hook.log")" 2 "--on-change ran once for the rotation"
[ "$(cat "$T/a1/files.version")" != "$old_ver" ] || fail "files.version did not change"

# ---- refusals ----
# The same nonce again: 409 nonce_used → exit 11; nothing stored; the nonce file is kept.
agent_rc 11 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-1.copy" --dir "$T/a-replay"
assert_contains "$T/aerr" "used already"
[ -e "$T/nonce-1.copy" ] || fail "a refused nonce file was deleted"
[ ! -e "$T/a-replay/identity.key" ] && [ ! -e "$T/a-replay/identity.crt" ] || fail "a refused enroll stored an identity"

# A nonce of another cluster (its own key): 401 nonce_invalid → exit 10.
ns_config "$T/other.yaml" <<EOF
cluster_id: other
storage: {backend: file, path: $T/other-bucket}
encryption_key: {source: file, path: $T/kek}
cache_dir: $T/other-cache
EOF
"$NS_CLI" -c "$T/other.yaml" secret create registration-nonce.key --type ed25519 >/dev/null
"$NS_CLI" -c "$T/other.yaml" nonce issue --kind agent --sub vm-x --tenant acme --group web >"$T/nonce-foreign"
agent_rc 10 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-foreign" --dir "$T/a-foreign"
assert_contains "$T/aerr" "refused the nonce"
[ -e "$T/nonce-foreign" ] || fail "a refused nonce file was deleted"
[ ! -e "$T/a-foreign/identity.crt" ] || fail "a refused enroll stored a certificate"

# An expired nonce (TTL 1s, leeway 1s): 401 nonce_invalid → exit 10, nonce file kept.
agent_nonce vm-old web "$T/nonce-old" --ttl 1s
sleep 3
agent_rc 10 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-old" --dir "$T/a-old"
[ -e "$T/nonce-old" ] || fail "an expired nonce file was deleted"
[ ! -e "$T/a-old/identity.crt" ] || fail "an expired nonce stored a certificate"

# A server that does not verify with --ca: exit 4, and the nonce is neither sent nor deleted.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/o.key" -subj /CN=other \
    -days 1 -out "$T/other-ca.crt" 2>/dev/null
agent_nonce vm-2 web "$T/nonce-2"
agent_rc 4 enroll --server "$SRV_URL" --ca "$T/other-ca.crt" --nonce-file "$T/nonce-2" --dir "$T/a-wrongca"
[ -e "$T/nonce-2" ] || fail "the nonce file was deleted after a TLS failure"
agent_rc 0 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-2" --dir "$T/a2"

# Sync without an identity: exit 3.
agent_rc 3 sync --server "$SRV_URL" --dir "$T/a-none" --root "$ROOT"

# ---- a path through a link below --root: exit 8, nothing written ----
agent_nonce vm-3 bad "$T/nonce-3"
agent_rc 0 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-3" --dir "$T/a3"
ROOT3=$T/root3
mkdir -p "$ROOT3/etc/app" "$T/outside"
echo "old" >"$ROOT3/etc/app/ca.crt"
ln -s "$T/outside" "$ROOT3/etc/link"
agent_rc 8 sync --server "$SRV_URL" --dir "$T/a3" --root "$ROOT3" --on-change "echo ran >>$T/hook3.log"
assert_contains "$T/aerr" "symbolic link"
assert_eq "$(cat "$ROOT3/etc/app/ca.crt")" old "an earlier valid file of an aborted sync"
[ -z "$(ls -A "$T/outside")" ] || fail "a file was written through the link"
[ ! -e "$T/hook3.log" ] || fail "--on-change ran for an aborted sync"
[ ! -e "$T/a3/files.version" ] || fail "files.version written for an aborted sync"
ls -a "$ROOT3/etc/app" | grep -q 'ns-tmp' && fail "a temporary file is left"

# ---- enroll --hostname/--ipv4/--ipv6: record fields and certificate SANs ----
CL="python3 $top_srcdir/tests/tools/srvclient.py"
OID=1.3.6.1.4.1.999999.1 # the default ca.role_oid
# Without them: no SAN, and the record says null.
$CL certcheck "$T/a1/identity.crt" "$T/ca.crt" vm-1 acme agent $OID >/dev/null || fail "vm-1: a certificate without SANs"
rec1=$T/bucket/shard/s1/instance/acme/vm-1.json
for f in hostname ipv4 ipv6; do
    assert_eq "$($CL field "$rec1" "$f")" null "vm-1 record $f without --$f"
done
agent_nonce vm-4 web "$T/nonce-4"
agent_rc 0 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-4" --dir "$T/a4" \
    --hostname vm-4.example --ipv4 10.0.0.5 --ipv6 2001:db8::5
$CL certcheck "$T/a4/identity.crt" "$T/ca.crt" vm-4 acme agent $OID vm-4.example 10.0.0.5 2001:db8::5 >/dev/null ||
    fail "vm-4: the certificate's SANs are not DNS:vm-4.example, IP:10.0.0.5, IP:2001:db8::5"
rec4=$T/bucket/shard/s1/instance/acme/vm-4.json
[ -f "$rec4" ] || fail "no registration record for vm-4"
assert_eq "$($CL field "$rec4" hostname)" vm-4.example "record hostname"
assert_eq "$($CL field "$rec4" ipv4)" 10.0.0.5 "record ipv4"
assert_eq "$($CL field "$rec4" ipv6)" 2001:db8::5 "record ipv6"
assert_eq "$($CL field "$rec4" sub)" vm-4 "record sub"
assert_eq "$($CL field "$rec4" tenant)" acme "record tenant"
assert_eq "$($CL field "$rec4" kind)" agent "record kind"
assert_eq "$($CL field "$rec4" group)" web "record group"
assert_eq "$($CL field "$rec4" shard)" s1 "record shard"
openssl pkey -in "$T/a4/identity.key" -pubout >"$T/pub4.pem"
$CL field "$rec4" public_key >"$T/rec4.pub"
cmp -s "$T/pub4.pem" "$T/rec4.pub" || fail "record public_key is not the agent's key"
serial4=$(openssl x509 -in "$T/a4/identity.crt" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' | sed 's/^0*//')
assert_eq "$($CL field "$rec4" serial)" "$serial4" "record serial"
# A renewal (the agent's own key, body {}) keeps the SANs: the server takes them from the record.
code=$(curl -s --cacert "$T/ca.crt" --cert "$T/a4/identity.crt" --key "$T/a4/identity.key" -o "$T/renew4.json" \
    -w '%{http_code}' --data-binary '{}' "$SRV_URL/v1/agent/renew")
assert_eq "$code" 200 "renew vm-4"
$CL field "$T/renew4.json" certificate >"$T/renew4.crt"
$CL certcheck "$T/renew4.crt" "$T/ca.crt" vm-4 acme agent $OID vm-4.example 10.0.0.5 2001:db8::5 >/dev/null ||
    fail "vm-4: the renewed certificate lost its SANs"
# The agent syncs with it like any other.
mkdir -p "$T/root4"
agent_rc 0 sync --server "$SRV_URL" --dir "$T/a4" --root "$T/root4"
assert_contains "$T/aout" "4 file(s), 4 changed"

# Bad values: a usage error (exit 2) that names the option, before the nonce is read or sent: no DIR, no
# record, the nonce file kept — and the same nonce enrolls afterwards.
agent_nonce vm-5 web "$T/nonce-5"
cp "$T/nonce-5" "$T/nonce-5.copy"
bad_enroll() { # OPTION VALUE
    agent_rc 2 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-5" --dir "$T/a5" "$1" "$2"
    assert_contains "$T/aerr" "$1 '$2' is not"
    [ ! -e "$T/a5" ] || fail "enroll $1 $2: DIR was made"
    [ -e "$T/nonce-5" ] || fail "enroll $1 $2: the nonce file was deleted"
    [ ! -e "$T/bucket/shard/s1/instance/acme/vm-5.json" ] || fail "enroll $1 $2: a record was written"
}
long=$(printf 'a%.0s' $(seq 1 64))
bad_enroll --hostname "bad_host"
bad_enroll --hostname "vm 5"
bad_enroll --hostname "-vm5.example"
bad_enroll --hostname "vm5-.example"
bad_enroll --hostname "$long.example"
bad_enroll --hostname "*.example"
bad_enroll --hostname ""
bad_enroll --ipv4 10.0.0.256
bad_enroll --ipv4 2001:db8::5
bad_enroll --ipv4 10.0.0
bad_enroll --ipv6 10.0.0.5
bad_enroll --ipv6 2001:db8::zz
bad_enroll --ipv6 ""
# The server refuses them too (a client other than our agent): 400 bad_request, the nonce not used.
openssl genpkey -algorithm ed25519 -out "$T/raw5.key" 2>/dev/null
openssl pkey -in "$T/raw5.key" -pubout -out "$T/raw5.pub"
for bad in "*.example - -" "bad_host - -" "- 10.0.0.256 -" "- 2001:db8::5 -" "- - 10.0.0.5" "- - 2001:db8::zz"; do
    read -r h v4 v6 <<<"$bad"
    [ "$h" = - ] && h=
    [ "$v4" = - ] && v4=
    [ "$v6" = - ] && v6=
    $CL regbody "$(cat "$T/nonce-5")" "$T/raw5.pub" "$h" "$v4" "$v6" >"$T/raw5.req"
    code=$(curl -s --cacert "$T/ca.crt" -o "$T/raw5.json" -w '%{http_code}' --data-binary @"$T/raw5.req" \
        "$SRV_URL/v1/register")
    assert_eq "$code" 400 "the server refuses hostname '$h' ipv4 '$v4' ipv6 '$v6'"
    assert_eq "$($CL field "$T/raw5.json" error)" bad_request "400 error code"
    [ ! -e "$T/bucket/shard/s1/instance/acme/vm-5.json" ] || fail "a refused registration wrote a record"
done
agent_rc 0 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-5" --dir "$T/a5" --hostname VM-5.Example \
    --ipv6 2001:DB8:0::7
assert_eq "$($CL field "$T/bucket/shard/s1/instance/acme/vm-5.json" hostname)" VM-5.Example "record keeps the name as given"
assert_eq "$($CL field "$T/bucket/shard/s1/instance/acme/vm-5.json" ipv6)" 2001:DB8:0::7 "record keeps the address as given"
$CL certcheck "$T/a5/identity.crt" "$T/ca.crt" vm-5 acme agent $OID VM-5.Example 2001:db8::7 >/dev/null ||
    fail "vm-5: SANs"

# ---- 50 agents at once ----
for i in $(seq 1 50); do
    agent_nonce "c-$i" web "$T/nonce-c$i"
done
pids=()
for i in $(seq 1 50); do
    "$AGENT" enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce-c$i" --dir "$T/c$i" \
        >"$T/c$i.out" 2>&1 &
    pids+=($!)
done
bad=0
for i in $(seq 1 50); do
    if ! wait "${pids[$((i - 1))]}"; then
        echo "agent c-$i failed:" >&2
        cat "$T/c$i.out" >&2
        bad=$((bad + 1))
    fi
done
[ "$bad" = 0 ] || fail "$bad of 50 concurrent enrolls failed"
for i in $(seq 1 50); do
    openssl x509 -in "$T/c$i/identity.crt" -noout -serial
done | sort -u >"$T/serials"
assert_eq "$(wc -l <"$T/serials")" 50 "distinct certificates"
assert_eq "$(ls "$T/bucket/shard/s1/instance/acme/" | grep -c '^c-[0-9]*\.json$')" 50 "registration records"

# The server ends cleanly: exit 0 and no sanitizer report in its log.
ns_server_stop "$SRV_PID" "$T/server.log"
assert_eq "$NS_RC" 0 "the server's exit status after SIGTERM"
echo "# agent-e2e: ok"
