# shellcheck shell=bash
# Helpers for integration tests. Source this file, then call ns_setup:
#
#   . "$top_srcdir/tests/integration/lib.sh"
#   ns_setup
#   ns_token t1 1234
#   ns_p11 t1 1234 --keygen --key-type AES:32 --label k1
#   ns_config "$T/config.yaml" <<EOF
#   ...
#   EOF
#   expect_rc 0 put name ...
#   assert_contains "$T/out" "..." "put prints the name"
#
# `make check` runs the scripts with $top_srcdir and $top_builddir exported (absolute paths). Run by
# hand, top_srcdir defaults to the checkout this file is in and top_builddir to $top_srcdir, e.g.
#   top_builddir=$PWD/_build bash tests/integration/cli-basic.sh
#
# Exit statuses follow automake's test protocol: 0 pass, 1 fail, 99 hard error (a missing tool is a hard
# error, never a skip). Set NS_KEEP_TMP=1 to keep the temporary directory for a post-mortem.
#
# Note: `fail` and the assertions end the script with `exit 1`; inside a $(...) subshell that only ends
# the subshell, so call them at the top level of the test.

# ---- setup and cleanup ----

NS_BG_PIDS=()

_ns_cleanup() {
    local pid
    for pid in "${NS_BG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${NS_BG_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${T:-}" ] && [ -d "$T" ]; then
        if [ "${NS_KEEP_TMP:-}" = 1 ]; then
            echo "# kept temporary directory $T" >&2
        else
            rm -rf "$T"
        fi
    fi
}

# Record a background process to be killed when the script exits.
ns_bg_pid() {
    NS_BG_PIDS+=("$1")
}

_ns_find_softhsm() {
    local m
    for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/lib/*/softhsm/libsofthsm2.so; do
        if [ -f "$m" ]; then
            printf '%s\n' "$m"
            return 0
        fi
    done
    return 1
}

ns_setup() {
    set -euo pipefail

    if [ -z "${top_srcdir:-}" ]; then
        top_srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    fi
    top_builddir=${top_builddir:-$top_srcdir}
    export top_srcdir top_builddir

    T=$(mktemp -d "${TMPDIR:-/tmp}/ns-test.XXXXXXXX")
    export T
    trap _ns_cleanup EXIT

    SOFTHSM_MODULE=$(_ns_find_softhsm) || {
        echo "SoftHSM not installed"
        exit 99
    }
    export SOFTHSM_MODULE
    local tool
    for tool in softhsm2-util pkcs11-tool; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "$tool not installed"
            exit 99
        fi
    done

    mkdir -p "$T/tokens"
    cat >"$T/softhsm2.conf" <<EOF
directories.tokendir = $T/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
    export SOFTHSM2_CONF=$T/softhsm2.conf

    NS_CLI=$top_builddir/nstance-secrets
    export NS_CLI
    NS_RC=0
}

# ---- tokens ----

# ns_token LABEL PIN: a fresh SoftHSM token; the user PIN is also written to $T/pin-LABEL (0600, no newline).
ns_token() {
    local label=$1 pin=$2
    echo "# token: $label"
    if ! softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin 12345678 \
        >"$T/softhsm2-util.out" 2>&1; then
        cat "$T/softhsm2-util.out" >&2
        fail "softhsm2-util --init-token --label $label failed"
    fi
    (
        umask 077
        printf '%s' "$pin" >"$T/pin-$label"
    )
    chmod 0600 "$T/pin-$label"
}

# ns_p11 LABEL PIN ARGS...: pkcs11-tool, logged in to that token. Output goes to $T/p11.out (stdout) and
# $T/p11.err (stderr), and is shown only on failure; returns pkcs11-tool's status.
ns_p11() {
    local label=$1 pin=$2 rc=0
    shift 2
    pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$label" --login --pin "$pin" "$@" \
        >"$T/p11.out" 2>"$T/p11.err" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "pkcs11-tool --token-label $label $* failed (exit $rc):" >&2
        cat "$T/p11.out" "$T/p11.err" >&2
    fi
    return "$rc"
}

# ns_config [FILE]: write stdin to FILE (default $T/config.yaml).
ns_config() {
    cat >"${1:-$T/config.yaml}"
}

# ---- running the CLI ----

# ns_run ARGS...: run the CLI with $T/config.yaml; stdout in $T/out, stderr in $T/err, exit status in
# $NS_RC. Never fails, even under set -e. Standard input is passed through.
ns_run() {
    printf '# step: nstance-secrets'
    printf ' %q' "$@"
    printf '\n'
    NS_RC=0
    "$NS_CLI" -c "$T/config.yaml" "$@" >"$T/out" 2>"$T/err" || NS_RC=$?
    return 0
}

# expect_rc N ARGS...: ns_run ARGS... and fail unless it exits with N.
expect_rc() {
    local want=$1
    shift
    ns_run "$@"
    if [ "$NS_RC" != "$want" ]; then
        {
            printf 'command: nstance-secrets -c %q' "$T/config.yaml"
            printf ' %q' "$@"
            printf '\nexpected exit %s, got %s\n--- stderr ---\n' "$want" "$NS_RC"
            cat "$T/err"
            printf -- '--- stdout ---\n'
            head -c 4096 "$T/out"
            printf -- '\n---\n'
        } >&2
        fail "nstance-secrets $*: expected exit $want, got $NS_RC"
    fi
}

# ---- assertions ----

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# assert_eq A B MSG
assert_eq() {
    if [ "$1" != "$2" ]; then
        fail "${3:-assert_eq}: '$1' != '$2'"
    fi
}

# assert_contains FILE STRING MSG: FILE contains STRING (a fixed string, not a pattern).
assert_contains() {
    if [ ! -f "$1" ]; then
        fail "${3:-assert_contains}: no file $1"
    fi
    if ! grep -qF -- "$2" "$1"; then
        {
            echo "--- $1 ---"
            head -c 4096 "$1"
            echo "---"
        } >&2
        fail "${3:-assert_contains}: $1 does not contain '$2'"
    fi
}

# assert_not_contains FILE STRING MSG
assert_not_contains() {
    if [ ! -f "$1" ]; then
        fail "${3:-assert_not_contains}: no file $1"
    fi
    if grep -qF -- "$2" "$1"; then
        {
            echo "--- $1 ---"
            grep -nF -- "$2" "$1" | head -n 20
            echo "---"
        } >&2
        fail "${3:-assert_not_contains}: $1 contains '$2'"
    fi
}

# assert_file_mode FILE MODE: permission bits in octal, e.g. 600 or 0600.
assert_file_mode() {
    local got
    if ! got=$(stat -c %a -- "$1" 2>/dev/null); then
        fail "assert_file_mode: no file $1"
    fi
    if [ "$((8#$got))" -ne "$((8#$2))" ]; then
        fail "assert_file_mode: $1 has mode $got, want $2"
    fi
}

# ns_ring_config FILE CLUSTER BUCKET PRIMARY [OLD...]: a config with a file store at BUCKET, the KEK entry
# PRIMARY (a YAML flow mapping such as "{source: file, path: /k}") and OLD entries as old_encryption_keys.
ns_ring_config() {
    local file=$1 cluster=$2 bucket=$3 primary=$4 k
    shift 4
    {
        printf 'cluster_id: %s\nstorage: {backend: file, path: %s}\nencryption_key: %s\n' "$cluster" "$bucket" "$primary"
        if [ "$#" -gt 0 ]; then
            printf 'old_encryption_keys:\n'
            for k in "$@"; do
                printf '  - %s\n' "$k"
            done
        fi
    } >"$file"
}

# ---- S3 (s3rver) ----

# ns_s3rver_start BUCKET...: start s3rver (contrib/s3rver, installed by `npm ci --prefix contrib/s3rver`,
# which contrib/test.sh runs) on 127.0.0.1 on a free port, with its data in $T/s3rver and the BUCKETs
# created, and wait until it listens. Sets S3_PORT, S3_ENDPOINT and S3_PID; the server is stopped (by its
# PID) when the script exits. s3rver checks the access key id (S3RVER) but neither signatures nor
# conditional headers. Missing node or s3rver is a hard error (exit 99), like every missing tool.
ns_s3rver_start() {
    local bin=$top_srcdir/contrib/s3rver/node_modules/s3rver/bin/s3rver.js b i
    local args=()
    if ! command -v node >/dev/null 2>&1; then
        echo "node not installed (contrib/deps.sh installs nodejs)"
        exit 99
    fi
    if [ ! -f "$bin" ]; then
        echo "s3rver not installed: run  npm ci --prefix $top_srcdir/contrib/s3rver  (contrib/test.sh does)"
        exit 99
    fi
    for b in "$@"; do
        args+=(--configure-bucket "$b")
    done
    mkdir -p "$T/s3rver"
    # Created here: the redirection below happens in the background child, maybe after the first read.
    : >"$T/s3rver.log"
    node --openssl-legacy-provider "$bin" -d "$T/s3rver" -a 127.0.0.1 -p 0 --silent "${args[@]}" \
        >"$T/s3rver.log" 2>&1 &
    S3_PID=$!
    ns_bg_pid "$S3_PID"
    S3_PORT=
    for i in $(seq 1 100); do
        S3_PORT=$(sed -n 's/^S3rver listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$T/s3rver.log" || true)
        [ -n "$S3_PORT" ] && break
        if ! kill -0 "$S3_PID" 2>/dev/null; then
            cat "$T/s3rver.log" >&2
            fail "s3rver exited at start"
        fi
        sleep 0.1
    done
    [ -n "$S3_PORT" ] || fail "s3rver did not start listening within 10 s"
    S3_ENDPOINT=http://127.0.0.1:$S3_PORT
    export S3_PORT S3_ENDPOINT S3_PID
    echo "# s3rver on $S3_ENDPOINT (pid $S3_PID)"
}

# ---- the server (nstance-secretsd) ----

# ns_server_start NAME CONFIG: start nstance-secretsd -c CONFIG in the background, stderr (its log) in
# $T/NAME.log, and wait until it listens. Sets SRV_PORT and SRV_PID (the process is also stopped by its PID
# when the script exits). The config's server.listen should be 127.0.0.1:0 (a free port).
ns_server_start() {
    local name=$1 cfg=$2 i
    : >"$T/$name.log"
    "$top_builddir/nstance-secretsd" -c "$cfg" 2>"$T/$name.log" &
    SRV_PID=$!
    ns_bg_pid "$SRV_PID"
    SRV_PORT=
    for i in $(seq 1 100); do
        SRV_PORT=$(sed -n 's/^nstance-secretsd: listening on .* (port \([0-9][0-9]*\)).*$/\1/p' "$T/$name.log" || true)
        [ -n "$SRV_PORT" ] && break
        if ! kill -0 "$SRV_PID" 2>/dev/null; then
            cat "$T/$name.log" >&2
            fail "nstance-secretsd ($name) exited at start"
        fi
        sleep 0.1
    done
    [ -n "$SRV_PORT" ] || fail "nstance-secretsd ($name) did not listen within 10 s"
    echo "# nstance-secretsd $name on 127.0.0.1:$SRV_PORT (pid $SRV_PID)"
}

# ns_server_ready PORT [SECONDS]: wait until /health answers 200 (not checking the certificate: the server
# uses a throw-away one until it is loaded).
ns_server_ready() {
    local port=$1 max=${2:-30} i code
    for i in $(seq 1 $((max * 10))); do
        code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/health" 2>/dev/null || true)
        [ "$code" = 200 ] && return 0
        sleep 0.1
    done
    fail "the server on port $port did not become ready within $max s (last /health status: $code)"
}

# ns_server_stop PID: SIGTERM, then wait; sets NS_RC to its exit status.
ns_server_stop() {
    NS_RC=0
    kill -TERM "$1"
    wait "$1" || NS_RC=$?
}

# ns_https OUT ARGS...: curl against the server, trusting only $T/ca.pem; the body goes to OUT and the
# status is printed.
ns_https() {
    local out=$1
    shift
    curl -s --cacert "$T/ca.pem" -o "$out" -w '%{http_code}' "$@" || true
}

# ns_server_config FILE CACHE_DIR [CLUSTER]: a server config with a file KEK ($T/kek.key, made if missing),
# the store $T/bucket, shard s1, listen 127.0.0.1:0, cache_check 1s, 2 threads, and two templates: group cp →
# control-plane (secret k8s-sa.key as pem-bundle, the CA bundle), group web → worker (secret web.key as pem).
# Extra top-level YAML can follow on stdin-less calls through $NS_SERVER_EXTRA (appended to the server section).
ns_server_config() {
    local file=$1 cache=$2 cluster=${3:-srv-test}
    if [ ! -f "$T/kek.key" ]; then
        head -c 32 /dev/urandom >"$T/kek.key"
        chmod 0600 "$T/kek.key"
    fi
    cat >"$file" <<EOF2
cluster_id: $cluster
storage: {backend: file, path: $T/bucket}
encryption_key: {source: file, path: $T/kek.key}
cache_dir: $cache
shard: s1
server:
  listen: "127.0.0.1:0"
  cache_check: 1s
  threads: 2
${NS_SERVER_EXTRA:-}
groups: {cp: control-plane, web: worker}
templates:
  control-plane:
    files:
      - {path: /etc/kubernetes/pki/sa.key, secret: k8s-sa.key, format: pem-bundle, mode: "0600"}
      - {path: /etc/nstance/ca.crt, ca_bundle: true, mode: "0644"}
  worker:
    files:
      - {path: /etc/web/tls.key, secret: web.key, format: pem, mode: "0640", group: www}
EOF2
}

# ns_server_register PORT NAME NONCE: register with a fresh Ed25519 key ($T/NAME.key); the answer in
# $T/NAME.json, the certificate in $T/NAME.crt; prints the HTTP status.
ns_server_register() {
    local port=$1 name=$2 nonce=$3 code
    openssl genpkey -algorithm ed25519 -out "$T/$name.key" 2>/dev/null
    openssl pkey -in "$T/$name.key" -pubout -out "$T/$name.pub"
    python3 "$top_srcdir/tests/tools/srvclient.py" regbody "$nonce" "$T/$name.pub" >"$T/$name.req"
    code=$(ns_https "$T/$name.json" --data-binary @"$T/$name.req" "https://127.0.0.1:$port/v1/register")
    if [ "$code" = 200 ]; then
        python3 "$top_srcdir/tests/tools/srvclient.py" field "$T/$name.json" certificate >"$T/$name.crt"
    fi
    echo "$code"
}
