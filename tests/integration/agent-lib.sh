# shellcheck shell=bash
# Helpers for the agent's end-to-end tests (agent-e2e.sh, agent-run.sh); source after lib.sh and ns_setup.
#
# agent_setup: a SoftHSM token "ca" whose P-256 key is the cluster CA, a file KEK and store, the secrets
# the templates use, and $T/config.yaml with a server section listening on 127.0.0.1:0 (groups web, bad,
# and selfkey/selfca, whose templates name files in /var/lib/nsagent for agent-own-dir.sh). Extra config
# lines (YAML under `server:`) come from $AGENT_SERVER_EXTRA. Sets AGENT.
# agent_server_start: starts nstance-secretsd with lib.sh's ns_server_start (log in $T/server.log), then
# waits until /health answers 200. Sets SRV_URL, SRV_PORT, SRV_PID.
# A missing nstance-secretsd is a hard error (exit 99), never a skip.

AGENT=$top_builddir/nstance-secrets-agent
SRV_BIN=$top_builddir/nstance-secretsd

agent_setup() {
    if [ ! -x "$SRV_BIN" ]; then
        echo "nstance-secretsd is not built ($SRV_BIN)"
        exit 99
    fi
    ns_token ca 2468
    head -c 32 /dev/urandom >"$T/kek"
    chmod 600 "$T/kek"
    CA_URI="pkcs11:token=ca;object=ca-p256?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-ca"
    # AGENT_STORAGE: another storage block (one line of flow YAML), e.g. the s3 backend on RGW.
    local storage=${AGENT_STORAGE:-}
    [ -n "$storage" ] || storage="{backend: file, path: $T/bucket}"
    ns_config <<EOF
cluster_id: e2e
shard: s1
storage: $storage
encryption_key: {source: file, path: $T/kek}
cache_dir: $T/cache
ca:
  keys: ["$CA_URI"]
registration_nonce:
  issuer: nstance-e2e
  leeway: 1s
server:
  listen: 127.0.0.1:0
  names: [localhost, 127.0.0.1]
  cache_check: 1s
${AGENT_SERVER_EXTRA:-}
templates:
  web:
    files:
      - {path: /etc/app/tls/app.pem, secret: app.key, format: pem-bundle, mode: "0600"}
      - {path: /etc/app/app.jwks, secret: app.key, format: jwks, mode: "0644", owner: root, group: root}
      - {path: /etc/app/token, secret: app.tok, format: raw, mode: "0640", group: daemon}
      - {path: /etc/app/ca.crt, ca_bundle: true, mode: "0644"}
  bad:
    files:
      - {path: /etc/app/ca.crt, ca_bundle: true, mode: "0644"}
      - {path: /etc/link/token, secret: app.tok, format: raw, mode: "0600"}
  selfkey:
    files:
      - {path: /etc/app/token, secret: app.tok, format: raw, mode: "0640"}
      - {path: /var/lib/nsagent/identity.key, secret: app.key, format: pem-bundle, mode: "0600"}
  selfca:
    files:
      - {path: /var/lib/nsagent/ca.crt, secret: app.tok, format: raw, mode: "0644"}
groups:
  web: web
  bad: bad
  selfkey: selfkey
  selfca: selfca
EOF
    expect_rc 0 ca init --key "$CA_URI"
    expect_rc 0 secret create registration-nonce.key --type ed25519
    expect_rc 0 secret create app.key --type ecdsa-p256
    expect_rc 0 secret create app.tok --type random --bytes 24
    expect_rc 0 ca bundle -o "$T/ca.crt"
    export AGENT
}

agent_server_start() {
    local i
    ns_server_start server "$T/config.yaml"
    SRV_URL=https://127.0.0.1:$SRV_PORT
    export SRV_URL SRV_PORT
    for i in $(seq 1 150); do
        if curl -sf --cacert "$T/ca.crt" "$SRV_URL/health" >/dev/null 2>&1; then
            echo "# nstance-secretsd on $SRV_URL (pid $SRV_PID)"
            return 0
        fi
        if ! kill -0 "$SRV_PID" 2>/dev/null; then
            cat "$T/server.log" >&2
            fail "nstance-secretsd exited at start"
        fi
        sleep 0.1
    done
    cat "$T/server.log" >&2
    fail "nstance-secretsd not healthy within 15 s"
}

# agent_nonce SUB GROUP FILE [ARGS...]: a registration nonce for tenant acme.
agent_nonce() {
    local sub=$1 group=$2 file=$3
    shift 3
    expect_rc 0 nonce issue --kind agent --sub "$sub" --tenant acme --group "$group" "$@"
    cp "$T/out" "$file"
}

# agent_rc WANT ARGS...: run the agent (stdout $T/aout, stderr $T/aerr) and fail unless it exits WANT.
agent_rc() {
    local want=$1 rc=0
    shift
    printf '# step: nstance-secrets-agent'
    printf ' %q' "$@"
    printf '\n'
    "$AGENT" "$@" >"$T/aout" 2>"$T/aerr" || rc=$?
    if [ "$rc" != "$want" ]; then
        echo "--- stderr ---" >&2
        cat "$T/aerr" >&2
        echo "--- stdout ---" >&2
        cat "$T/aout" >&2
        echo "--- server log (tail) ---" >&2
        tail -n 20 "$T/server.log" >&2 || true
        fail "agent $*: expected exit $want, got $rc"
    fi
}
