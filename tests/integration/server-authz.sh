#!/usr/bin/env bash
# Covers: who gets what from nstance-secretsd. Registration: a replayed nonce (409 nonce_used), a nonce of
# another cluster (401 nonce_invalid), a forged nonce (401), an operator nonce registers an operator. Client
# certificates on /v1/agent/files and the renew endpoints: none (401), from another CA (401), expired (401),
# not yet valid (401), two Organizations (401), no role extension (403), an operator certificate on agent
# endpoints and an agent certificate on /v1/operator/renew (403); error bodies are JSON with the code only.
# An agent gets its own group's template and nothing else; an agent without a record, or whose group has no
# template, gets 404. Two servers sharing one store (own cache_dir each): the same nonce sent to both at once
# registers exactly once (one 200, one 409), and a nonce used on one is refused by the other. Both servers
# exit 0 on SIGTERM with no sanitizer report in their logs.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_need curl openssl python3
ns_need_py cryptography
CL="python3 $top_srcdir/tests/tools/srvclient.py"
OID=1.3.6.1.4.1.999999.1

# Renewals right after registration are part of this test: no renewal limit.
export NS_SERVER_EXTRA='  renew_min_interval: 0s'
ns_server_config "$T/config.yaml" "$T/cache1"
ns_server_config "$T/standby.yaml" "$T/cache2"
ns_server_config "$T/other.yaml" "$T/cache3" other-cluster
expect_rc 0 ca init
expect_rc 0 secret create registration-nonce.key --type ecdsa-p256
expect_rc 0 secret create k8s-sa.key --type ed25519
expect_rc 0 secret create web.key --type ecdsa-p256
expect_rc 0 ca bundle -o "$T/ca.pem"
ns_server_start a "$T/config.yaml"
PA=$SRV_PORT
PIDA=$SRV_PID
ns_server_start b "$T/standby.yaml"
PB=$SRV_PORT
PIDB=$SRV_PID
ns_server_ready "$PA"
ns_server_ready "$PB"

nonce() { # ARGS for nonce issue; prints the JWT
    expect_rc 0 nonce issue "$@" >&2
    cat "$T/out"
}
err_is() { # FILE CODE
    assert_eq "$($CL field "$1" error)" "$2" "error code in $1"
    assert_eq "$(python3 -c 'import json,sys; print(sorted(json.load(open(sys.argv[1]))))' "$1")" \
        "['error', 'message']" "error body members"
}

# ---- registration ----
N1=$(nonce --kind agent --sub vm-1 --tenant acme --shard s1 --group cp)
assert_eq "$(ns_server_register "$PA" vm1 "$N1")" 200 "first use"
assert_eq "$(ns_server_register "$PA" vm1b "$N1")" 409 "replay on the same server"
err_is "$T/vm1b.json" nonce_used
assert_eq "$(ns_server_register "$PB" vm1c "$N1")" 409 "replay on the standby server"
err_is "$T/vm1c.json" nonce_used

ns_run_other() {
    NS_RC=0
    "$NS_CLI" -c "$T/other.yaml" "$@" >"$T/out" 2>"$T/err" || NS_RC=$?
}
ns_run_other nonce issue --kind agent --sub vm-9 --tenant acme --group cp
assert_eq "$NS_RC" 0 "nonce issue for another cluster"
assert_eq "$(ns_server_register "$PA" vm9 "$(cat "$T/out")")" 401 "nonce of another cluster"
err_is "$T/vm9.json" nonce_invalid
FORGED="${N1%.*}.AAAA"
assert_eq "$(ns_server_register "$PA" forged "$FORGED")" 401 "forged signature"
err_is "$T/forged.json" nonce_invalid
assert_eq "$(ns_server_register "$PA" junk "not-a-jwt")" 401 "malformed nonce"

N2=$(nonce --kind agent --sub vm-2 --tenant acme --shard s1 --group web)
assert_eq "$(ns_server_register "$PA" vm2 "$N2")" 200 "agent in group web"
N3=$(nonce --kind agent --sub vm-3 --tenant acme --shard s1 --group nogroup)
assert_eq "$(ns_server_register "$PA" vm3 "$N3")" 200 "agent in a group without template"
N4=$(nonce --kind agent --sub vm-4 --tenant acme --shard s1)
assert_eq "$(ns_server_register "$PA" vm4 "$N4")" 200 "agent without group"
NO=$(nonce --kind operator --sub alice --tenant acme)
assert_eq "$(ns_server_register "$PA" alice "$NO")" 200 "operator"

# ---- files: each agent gets its own template ----
files() { # NAME [extra curl args]: status of GET /v1/agent/files with $T/NAME.{crt,key}
    local n=$1
    shift
    ns_https "$T/$n.files" --cert "$T/$n.crt" --key "$T/$n.key" "$@" "https://127.0.0.1:$PA/v1/agent/files"
}
assert_eq "$(files vm1)" 200 "vm-1 files"
python3 -c 'import json,sys; print(" ".join(f["path"] for f in json.load(open(sys.argv[1]))["files"]))' \
    "$T/vm1.files" >"$T/p1"
assert_eq "$(cat "$T/p1")" "/etc/kubernetes/pki/sa.key /etc/nstance/ca.crt" "vm-1 gets control-plane"
assert_eq "$(files vm2)" 200 "vm-2 files"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["files"]; print(" ".join(f["path"]+":"+f["group"] for f in d))' \
    "$T/vm2.files" >"$T/p2"
assert_eq "$(cat "$T/p2")" "/etc/web/tls.key:www" "vm-2 gets worker only"
mkdir -p "$T/vm2out"
$CL files "$T/vm2.files" "$T/vm2out" >/dev/null || fail "vm-2 files answer"
expect_rc 0 secret export web.key --format pem
cmp -s "$T/out" "$T/vm2out/etc_web_tls.key" || fail "web.key content"
assert_not_contains "$T/vm2.files" "$(base64 -w0 <"$T/ca.pem" | head -c 40)" "vm-2 does not get the CA file"
assert_eq "$(files vm3)" 404 "group without template"
err_is "$T/vm3.files" not_found
assert_eq "$(files vm4)" 404 "agent without group"

# An agent certificate from `ca issue` but no registration record.
openssl genpkey -algorithm ed25519 -out "$T/ghost.key" 2>/dev/null
openssl pkey -in "$T/ghost.key" -pubout -out "$T/ghost.pub"
expect_rc 0 ca issue --public-key "$T/ghost.pub" --cn ghost --tenant acme --role agent -o "$T/ghost.crt"
assert_eq "$(files ghost)" 404 "no registration record"

# ---- client certificates ----
code=$(ns_https "$T/nc" "https://127.0.0.1:$PA/v1/agent/files")
assert_eq "$code" 401 "no client certificate"
err_is "$T/nc" unauthorized
code=$(ns_https "$T/nc" --data-binary '{}' "https://127.0.0.1:$PA/v1/agent/renew")
assert_eq "$code" 401 "renew without certificate"

$CL mkcert "$T/other.key" "$T/other.crt" vm-1 acme agent $OID -60 3600
assert_eq "$(files other)" 401 "certificate of another CA"
err_is "$T/other.files" unauthorized

expect_rc 0 secret export ca.key --format pem
cp "$T/out" "$T/ca-key.pem"
head -n "$(grep -n 'END CERTIFICATE' "$T/ca.pem" | head -1 | cut -d: -f1)" "$T/ca.pem" >"$T/ca-first.pem"
$CL mkcert "$T/exp.key" "$T/exp.crt" vm-1 acme agent $OID -7200 -3600 "$T/ca-first.pem" "$T/ca-key.pem"
assert_eq "$(files exp)" 401 "expired certificate of our CA"
$CL mkcert "$T/fut.key" "$T/fut.crt" vm-1 acme agent $OID 3600 7200 "$T/ca-first.pem" "$T/ca-key.pem"
assert_eq "$(files fut)" 401 "certificate not yet valid"
$CL mkcert "$T/two.key" "$T/two.crt" vm-1 acme,evil agent $OID -60 3600 "$T/ca-first.pem" "$T/ca-key.pem"
assert_eq "$(files two)" 401 "two Organizations"
$CL mkcert "$T/norole.key" "$T/norole.crt" vm-1 acme - $OID -60 3600 "$T/ca-first.pem" "$T/ca-key.pem"
assert_eq "$(files norole)" 403 "no role extension"
err_is "$T/norole.files" forbidden
$CL mkcert "$T/good.key" "$T/good.crt" vm-1 acme agent $OID -60 3600 "$T/ca-first.pem" "$T/ca-key.pem"
# The control: the same certificate made the same way, valid, passes the certificate checks (so the refusals
# above are for their stated reasons); it is then refused because vm-1's record names another certificate.
assert_eq "$(files good)" 403 "the control: a valid certificate the record does not name"
err_is "$T/good.files" certificate_replaced

assert_eq "$(files alice)" 403 "operator certificate on the agent endpoint"
err_is "$T/alice.files" forbidden
code=$(ns_https "$T/r" --cert "$T/alice.crt" --key "$T/alice.key" --data-binary '{}' \
    "https://127.0.0.1:$PA/v1/agent/renew")
assert_eq "$code" 403 "operator certificate on agent renew"
code=$(ns_https "$T/r" --cert "$T/vm1.crt" --key "$T/vm1.key" --data-binary '{}' \
    "https://127.0.0.1:$PA/v1/operator/renew")
assert_eq "$code" 403 "agent certificate on operator renew"
code=$(ns_https "$T/r" --cert "$T/alice.crt" --key "$T/alice.key" --data-binary '{}' \
    "https://127.0.0.1:$PA/v1/operator/renew")
assert_eq "$code" 200 "operator certificate on operator renew"
assert_not_contains "$T/a.log" "PRIVATE" "no key material in the log"

# ---- two servers, one store: the same nonce at once ----
for i in 1 2 3 4 5; do
    NR=$(nonce --kind agent --sub "race-$i" --tenant acme --shard s1 --group cp)
    openssl genpkey -algorithm ed25519 -out "$T/race.key" 2>/dev/null
    openssl pkey -in "$T/race.key" -pubout -out "$T/race.pub"
    $CL regbody "$NR" "$T/race.pub" >"$T/race.req"
    ns_https "$T/ra.json" --data-binary @"$T/race.req" "https://127.0.0.1:$PA/v1/register" >"$T/ra.code" &
    p1=$!
    ns_https "$T/rb.json" --data-binary @"$T/race.req" "https://127.0.0.1:$PB/v1/register" >"$T/rb.code" &
    p2=$!
    wait "$p1" "$p2"
    got=$(printf '%s\n%s\n' "$(cat "$T/ra.code")" "$(cat "$T/rb.code")" | sort | tr '\n' ' ')
    assert_eq "$got" "200 409 " "race $i: exactly one registration"
done

# Both servers end cleanly: exit 0 and no sanitizer report in their logs.
ns_server_stop "$PIDA" "$T/a.log"
assert_eq "$NS_RC" 0 "server a: exit status after SIGTERM"
ns_server_stop "$PIDB" "$T/b.log"
assert_eq "$NS_RC" 0 "server b: exit status after SIGTERM"
echo "PASS"
