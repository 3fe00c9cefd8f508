#!/usr/bin/env bash
# Covers: `nstance-secrets-agent run` against the real nstance-secretsd with server.agent_cert_ttl 60s (the
# server's minimum): the agent renews at two thirds of the lifetime (about 40 s after enrolling, not before
# 35 s) with the same key, the new certificate verifies and has another serial, a second registration-record
# update follows; it keeps syncing (a rotation after the renewal reaches the files, --on-change runs);
# SIGTERM ends it with status 0 within 2 s. The server then ends with status 0 and no sanitizer report.
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

# Renewal: due at two thirds of the lifetime counted from when identity.crt was written (its mtime, or
# notBefore if later; src/agent/renew.c), i.e. about 40 s after enrolling. The assertions use that instant,
# not the wall clock since this script's enroll, which a loaded machine stretches.
written=$(stat -c %Y "$T/a/identity.crt")
not_before=$(date -d "$(openssl x509 -in "$T/a/identity.crt" -noout -startdate | cut -d= -f2)" +%s)
not_after=$(date -d "$(openssl x509 -in "$T/a/identity.crt" -noout -enddate | cut -d= -f2)" +%s)
[ "$not_before" -le "$written" ] || written=$not_before
due=$((written + (not_after - written) * 2 / 3))
[ $((due - t_enroll)) -ge 35 ] || fail "the renewal is due $((due - t_enroll))s after enrolling, before two thirds of 60s"
renewed_or_dead() {
    grep -q "renew: new certificate" "$T/run.out" && return 0
    kill -0 "$RUN_PID" 2>/dev/null || { cat "$T/run.err" >&2; fail "run exited"; }
    return 1
}
ns_wait_until $((due + 20 - $(date +%s))) "no renewal within 20 s of its due time" renewed_or_dead
renewed=$(date +%s)
echo "# renewed $((renewed - t_enroll))s after enrolling ($((renewed - due))s after it was due)"
# Not early: the line is printed after the renewal, so "seen" is never before "done".
[ "$renewed" -ge "$due" ] || fail "renewed at $renewed, before it was due ($due)"
[ "$renewed" -le $((due + 15)) ] || fail "renewed $((renewed - due))s after it was due"
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
changed_syncs() { grep -c '^sync: .* [1-9][0-9]* changed' "$T/run.out" || true; }
all_syncs() { grep -c '^sync: ' "$T/run.out" || true; }
changed0=$(changed_syncs)
expect_rc 0 secret rotate app.key
expect_rc 0 secret export app.key --format pem-bundle -o "$T/exp.pem"
# A sync prints its "N changed" line after its --on-change hook has run.
more_changed() { [ "$(changed_syncs)" -gt "$changed0" ]; }
ns_wait_until 20 "the rotation did not arrive after renewal" more_changed
cmp -s "$ROOT/etc/app/tls/app.pem" "$T/exp.pem" || { cat "$T/run.err" >&2; fail "the rotated file differs"; }
# One more sync after it (--interval 2s): a hook that runs again (on an unchanged sync, or in a loop)
# is counted too.
syncs=$(all_syncs)
one_more_sync() { [ "$(all_syncs)" -gt "$syncs" ]; }
ns_wait_until 10 "no sync after the rotation's" one_more_sync
assert_eq "$(wc -l <"$T/hook.log")" "$((hooks + 1))" "--on-change ran once for the rotation"
assert_eq "$(grep -c "renew: new certificate" "$T/run.out")" 1 "one renewal (the next is 40 s away)"

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
ns_server_stop "$SRV_PID" "$T/server.log"
assert_eq "$NS_RC" 0 "the server's exit status after SIGTERM"
echo "# agent-run: ok"
