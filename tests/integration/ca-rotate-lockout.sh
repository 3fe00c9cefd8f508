#!/usr/bin/env bash
# Regression (issue 12, item 2): CA rotation locked every enrolled agent out. After `ca rotate` the server's
# TLS certificate came from the new CA and was sent alone: an agent trusting the old root could not verify
# it, could not renew, and exited 4 until re-enrolled. And with the old default `ca.path_len: 0`, Go's
# crypto/x509 and GnuTLS refused old root + cross certificate -> new leaf even when the chain was sent.
#
# Covers, with the real agent and no bundle copied by hand: the default path lengths (root 2, cross 1); enroll
# (trusting the old root only), `ca rotate` picked up by the running server, which then sends its new
# certificate with the cross certificate; an agent `sync` verifies that chain, stores the new bundle and
# renews at once (its certificate is from the old CA); `renew` of another agent works over the same chain;
# Go (crypto/tls + crypto/x509, an mTLS GET), GnuTLS (gnutls-cli) and OpenSSL (s_client, verify -untrusted)
# each verify the server trusting only the old root and trusting only the new root, after a restart too;
# `ca retire` of the old root: the agent that synced keeps syncing and renewing, one that never synced
# since the rotation is locked out (exit 4: it must enroll again, doc/agent.md), and the old root alone no
# longer verifies the server (the cross certificate is no longer sent). A cross certificate in the store that
# is not the new key certified by the old root (the store is not trusted, DESIGN.md §7) is not sent.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
ns_need curl openssl go gnutls-cli certtool
. "$top_srcdir/tests/integration/agent-lib.sh"
# The default renewal limit (one per identity per minute) stays on until the restarts below: the renewal an
# agent makes on its first sync after `ca rotate`, seconds after its registration, must pass it.
AGENT_SERVER_EXTRA='  renew_min_interval: 60s' agent_setup

# The Go client, built once, offline, standard library only, caches inside $T.
mkdir -p "$T/go/cache" "$T/go/home" "$T/go/path"
GOENV=(env GOTOOLCHAIN=local GO111MODULE=off GOPROXY=off GOFLAGS= GOCACHE="$T/go/cache" HOME="$T/go/home"
    GOPATH="$T/go/path")
"${GOENV[@]}" go build -o "$T/tlscheck" "$top_srcdir/tests/tools/tlscheck.go" >"$T/go.out" 2>&1 || {
    cat "$T/go.out" >&2
    fail "go build tests/tools/tlscheck.go"
}

agent_server_start
cp "$T/ca.crt" "$T/old.pem" # the old root alone
openssl x509 -in "$T/old.pem" -noout -text >"$T/old.txt"
assert_contains "$T/old.txt" "CA:TRUE, pathlen:2" "default path length of a CA certificate"

# Three agents enrolled before the rotation, each trusting the old root only.
for a in 1 2 3; do
    mkdir -p "$T/root$a"
    agent_nonce "vm-$a" web "$T/nonce-$a"
    agent_rc 0 enroll --server "$SRV_URL" --ca "$T/old.pem" --nonce-file "$T/nonce-$a" --dir "$T/a$a"
done
agent_rc 0 sync --server "$SRV_URL" --dir "$T/a1" --root "$T/root1"
agent_rc 0 sync --server "$SRV_URL" --dir "$T/a1" --root "$T/root1"
assert_contains "$T/aout" "sync: unchanged"
assert_not_contains "$T/aout" "CA bundle" "no CA change, no new bundle"

# ---- rotate: a software P-256 CA key; the running server picks it up (cache_check 1s) ----
expect_rc 0 ca rotate --type ecdsa-p256
expect_rc 0 ca bundle -o "$T/bundle2.pem"
openssl x509 -in "$T/bundle2.pem" -out "$T/new.pem" # the new root alone (newest first)
expect_rc 0 ca bundle --cross -o "$T/cross.pem"
openssl x509 -in "$T/cross.pem" -noout -text >"$T/cross.txt"
assert_contains "$T/cross.txt" "CA:TRUE, pathlen:1" "a cross certificate's path length is one less"
ok=
for i in $(seq 1 300); do
    if curl -sf --cacert "$T/new.pem" "$SRV_URL/health" >/dev/null 2>&1; then
        ok=1
        break
    fi
    sleep 0.1
done
[ -n "$ok" ] || fail "the server's certificate did not change to the new CA within 30 s"

# check_clients CAFILE WANT LABEL: Go, GnuTLS and OpenSSL against the server, trusting only CAFILE; WANT ok
# or fail. Go also makes an mTLS GET with agent 1's certificate.
check_clients() {
    local ca=$1 want=$2 label=$3 rc
    rc=0
    "$T/tlscheck" -addr "127.0.0.1:$SRV_PORT" -ca "$ca" -name localhost -cert "$T/a1/identity.crt" \
        -key "$T/a1/identity.key" -get /v1/agent/files >"$T/go-check.out" 2>&1 || rc=$?
    if [ "$want" = ok ] && [ "$rc" != 0 ]; then
        cat "$T/go-check.out" >&2
        fail "Go ($label): the server's chain does not verify or the mTLS GET failed"
    fi
    if [ "$want" = fail ] && [ "$rc" = 0 ]; then
        fail "Go ($label): verified, but should not"
    fi
    rc=0
    gnutls-cli --x509cafile="$ca" --port="$SRV_PORT" --verify-hostname=localhost 127.0.0.1 \
        </dev/null >"$T/gnutls.out" 2>&1 || rc=$?
    if [ "$want" = ok ] && { [ "$rc" != 0 ] || ! grep -q "Handshake was completed" "$T/gnutls.out"; }; then
        cat "$T/gnutls.out" >&2
        fail "GnuTLS ($label): the server's chain does not verify"
    fi
    if [ "$want" = fail ] && [ "$rc" = 0 ]; then
        fail "GnuTLS ($label): verified, but should not"
    fi
    rc=0
    openssl s_client -connect "127.0.0.1:$SRV_PORT" -CAfile "$ca" -verify_return_error \
        -verify_hostname localhost -showcerts </dev/null >"$T/ossl.out" 2>&1 || rc=$?
    if [ "$want" = ok ] && { [ "$rc" != 0 ] || ! grep -q "Verification: OK" "$T/ossl.out"; }; then
        cat "$T/ossl.out" >&2
        fail "OpenSSL s_client ($label): the server's chain does not verify"
    fi
    if [ "$want" = fail ] && [ "$rc" = 0 ]; then
        fail "OpenSSL s_client ($label): verified, but should not"
    fi
}

# The presented chain: the server's certificate and the cross certificate; each library verifies it.
openssl s_client -connect "127.0.0.1:$SRV_PORT" -CAfile "$T/new.pem" -showcerts </dev/null >"$T/chain.out" 2>&1 ||
    true
sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$T/chain.out" >"$T/presented.pem"
[ "$(grep -c BEGIN "$T/presented.pem")" = 2 ] || fail "the server should send its certificate and the cross certificate"
openssl x509 -in "$T/presented.pem" -out "$T/leaf.pem"
openssl verify -CAfile "$T/old.pem" -untrusted "$T/cross.pem" "$T/leaf.pem" >/dev/null 2>&1 ||
    fail "openssl verify: the server's certificate via the cross certificate to the old root"
certtool --verify --load-ca-certificate "$T/old.pem" --infile "$T/presented.pem" >"$T/certtool.out" 2>&1 || {
    cat "$T/certtool.out" >&2
    fail "certtool: the presented chain to the old root"
}
check_clients "$T/old.pem" ok "old root only"
check_clients "$T/new.pem" ok "new root only"

# ---- agents after the rotation ----
# a1: sync verifies the chain with the old root, stores the new bundle, and renews with the new CA.
agent_rc 0 sync --server "$SRV_URL" --dir "$T/a1" --root "$T/root1"
assert_contains "$T/aout" "new CA bundle, 2 certificate(s)" "sync picks up the new bundle"
assert_contains "$T/aout" "renew: new certificate" "sync renews a certificate of the old CA"
cmp -s "$T/a1/ca.crt" "$T/bundle2.pem" || fail "a1/ca.crt is not the new bundle"
openssl verify -CAfile "$T/new.pem" "$T/a1/identity.crt" >/dev/null 2>&1 || fail "a1's certificate is not from the new CA"
agent_rc 0 sync --server "$SRV_URL" --dir "$T/a1" --root "$T/root1"
assert_not_contains "$T/aout" "CA bundle" "the bundle is fetched again only when it changed"
assert_not_contains "$T/aout" "renew:" "no second renewal"
# a2: renew alone, still trusting only the old root.
agent_rc 0 renew --server "$SRV_URL" --dir "$T/a2"
assert_contains "$T/aout" "renew: new certificate"
cmp -s "$T/a2/ca.crt" "$T/bundle2.pem" || fail "a2/ca.crt is not the new bundle after renew"
agent_rc 0 sync --server "$SRV_URL" --dir "$T/a2" --root "$T/root2"
# a1 renewed moments ago (in its sync): a renewal now is rate-limited (429, exit 5) and changes nothing.
cp "$T/a1/identity.crt" "$T/a1.crt.saved"
agent_rc 5 renew --server "$SRV_URL" --dir "$T/a1"
cmp -s "$T/a1/identity.crt" "$T/a1.crt.saved" || fail "a rate-limited renewal changed identity.crt"
# From here on agents renew at will: lift the limit for the restarted servers.
sed -i 's/renew_min_interval: 60s/renew_min_interval: 0s/' "$T/config.yaml"
grep -q 'renew_min_interval: 0s' "$T/config.yaml" || fail "could not lift the renewal limit"

# restart: a new server process, healthy as seen with the new root (the old one alone may not verify it).
restart() {
    local i
    ns_server_stop "$SRV_PID"
    ns_server_start server "$T/config.yaml"
    SRV_URL=https://127.0.0.1:$SRV_PORT
    for i in $(seq 1 300); do
        curl -sf --cacert "$T/new.pem" "$SRV_URL/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$T/server.log" >&2
    fail "nstance-secretsd not healthy within 30 s of a restart"
}

# ---- the store is not trusted: a cross certificate that is not what its name says is not sent ----
XF=$(ls "$T"/bucket/cluster/ca-cross/*.crt)
[ "$(wc -l <<<"$XF")" = 1 ] || fail "one cross certificate in the store"
cmp -s "$XF" "$T/cross.pem" || fail "the stored cross certificate is not what ca bundle --cross prints"
cp "$XF" "$T/cross.saved"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/bogus.key" -subj "/CN=e2e CA"     -addext basicConstraints=critical,CA:TRUE -days 2 -out "$XF" 2>/dev/null
restart
assert_contains "$T/server.log" "is not a certificate of the CA's key issued by the CA before it: ignored"
openssl s_client -connect "127.0.0.1:$SRV_PORT" -CAfile "$T/new.pem" -showcerts </dev/null >"$T/chain.out" 2>&1 || true
[ "$(grep -c 'BEGIN CERTIFICATE' "$T/chain.out")" = 1 ] || fail "a bogus cross certificate from the store was sent"
cp "$T/cross.saved" "$XF"

# ---- a restart: the chain is sent from the start too ----
restart
agent_rc 0 renew --server "$SRV_URL" --dir "$T/a1"
check_clients "$T/old.pem" ok "old root only, after a restart"
check_clients "$T/new.pem" ok "new root only, after a restart"

# ---- retire the old root ----
expect_rc 0 ca retire
ok=
for i in $(seq 1 300); do
    openssl s_client -connect "127.0.0.1:$SRV_PORT" -CAfile "$T/new.pem" -showcerts </dev/null >"$T/chain.out" 2>&1 ||
        true
    if [ "$(grep -c 'BEGIN CERTIFICATE' "$T/chain.out")" = 1 ]; then
        ok=1
        break
    fi
    sleep 0.1
done
[ -n "$ok" ] || fail "after ca retire the server still sends the cross certificate (30 s)"
kill -HUP "$SRV_PID"
for a in 1 2; do
    agent_rc 0 sync --server "$SRV_URL" --dir "$T/a$a" --root "$T/root$a"
    assert_contains "$T/aout" "new CA bundle, 1 certificate(s)" "a$a: the retired CA leaves ca.crt"
    cmp -s "$T/a$a/ca.crt" "$T/new.pem" || fail "a$a/ca.crt is not the bundle after retire"
    agent_rc 0 renew --server "$SRV_URL" --dir "$T/a$a"
    agent_rc 0 sync --server "$SRV_URL" --dir "$T/a$a" --root "$T/root$a"
done
# a3 never talked to the server between rotate and retire: it trusts only the retired root.
agent_rc 4 sync --server "$SRV_URL" --dir "$T/a3" --root "$T/root3"
check_clients "$T/new.pem" ok "new root only, after retire"
check_clients "$T/old.pem" fail "retired root only, after retire"
kill -0 "$SRV_PID" || fail "the server died"
echo "# ok"
