#!/usr/bin/env bash
# Covers: `nstance-secrets-agent run` against the real nstance-secretsd with server.agent_cert_ttl 60s (the
# server's minimum): the agent renews at two thirds of the lifetime (about 40 s after enrolling, not before
# 35 s) with the same key, the new certificate verifies and has another serial, a second registration-record
# update follows; it keeps syncing (a rotation after the renewal reaches the files, --on-change runs);
# SIGTERM ends it with status 0 within 2 s.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
. "$top_srcdir/tests/integration/agent-lib.sh"
AGENT_SERVER_EXTRA="  agent_cert_ttl: 60s"
agent_setup
agent_server_start
ROOT=$T/root
mkdir -p "$ROOT"

agent_nonce vm-r web "$T/nonce"
agent_rc 0 enroll --server "$SRV_URL" --ca "$T/ca.crt" --nonce-file "$T/nonce" --dir "$T/a"
t_enroll=$(date +%s)
serial1=$(openssl x509 -in "$T/a/identity.crt" -noout -serial)
cp "$T/a/identity.key" "$T/key-before"

: >"$T/run.out"
"$AGENT" run --server "$SRV_URL" --dir "$T/a" --root "$ROOT" --interval 2s --on-change "echo ran >>$T/hook.log" \
    >"$T/run.out" 2>"$T/run.err" &
RUN_PID=$!
ns_bg_pid "$RUN_PID"

# The first sync writes the files.
for _ in $(seq 1 50); do
    [ -f "$ROOT/etc/app/tls/app.pem" ] && break
    sleep 0.2
done
[ -f "$ROOT/etc/app/tls/app.pem" ] || { cat "$T/run.err" >&2; fail "run did not sync"; }

# Renewal: not before 35 s, done by 55 s.
renewed=
for _ in $(seq 1 300); do
    if grep -q "renew: new certificate" "$T/run.out"; then
        renewed=$(date +%s)
        break
    fi
    kill -0 "$RUN_PID" 2>/dev/null || { cat "$T/run.err" >&2; fail "run exited"; }
    sleep 0.2
done
[ -n "$renewed" ] || { cat "$T/run.err" >&2; fail "no renewal within 60 s"; }
elapsed=$((renewed - t_enroll))
echo "# renewed after ${elapsed}s"
[ "$elapsed" -ge 35 ] || fail "renewed after ${elapsed}s, before two thirds of 60s"
[ "$elapsed" -le 55 ] || fail "renewed after ${elapsed}s, well after two thirds of 60s"
serial2=$(openssl x509 -in "$T/a/identity.crt" -noout -serial)
[ "$serial1" != "$serial2" ] || fail "the renewed certificate has the old serial"
cmp -s "$T/key-before" "$T/a/identity.key" || fail "renewal changed the identity key"
openssl verify -CAfile "$T/a/ca.crt" "$T/a/identity.crt" >/dev/null || fail "the renewed certificate does not verify"
openssl x509 -in "$T/a/identity.crt" -noout -pubkey >"$T/pub-crt"
openssl pkey -in "$T/a/identity.key" -pubout >"$T/pub-key"
cmp -s "$T/pub-crt" "$T/pub-key" || fail "the renewed certificate is not for the identity key"
assert_contains "$T/bucket/shard/s1/instance/acme/vm-r.json" "$(echo "$serial2" | sed 's/^serial=//' | tr A-F a-f)"

# It keeps syncing with the new certificate.
hooks=$(wc -l <"$T/hook.log")
expect_rc 0 secret rotate app.key
expect_rc 0 secret export app.key --format pem-bundle -o "$T/exp.pem"
for _ in $(seq 1 50); do
    cmp -s "$ROOT/etc/app/tls/app.pem" "$T/exp.pem" && break
    sleep 0.2
done
cmp -s "$ROOT/etc/app/tls/app.pem" "$T/exp.pem" || { cat "$T/run.err" >&2; fail "the rotation did not arrive after renewal"; }
sleep 0.5
assert_eq "$(wc -l <"$T/hook.log")" "$((hooks + 1))" "--on-change ran once for the rotation"

# SIGTERM: a clean exit, quickly.
kill -TERM "$RUN_PID"
for _ in $(seq 1 20); do
    kill -0 "$RUN_PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$RUN_PID" 2>/dev/null && fail "run did not stop within 2 s of SIGTERM"
rc=0
wait "$RUN_PID" || rc=$?
assert_eq "$rc" 0 "run's exit status after SIGTERM"
assert_not_contains "$T/run.err" "PRIVATE KEY"
echo "# agent-run: ok"
