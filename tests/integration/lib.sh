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
NS_SRV_LOGS=()
NS_SANITIZER_RE='ERROR: [A-Za-z]+Sanitizer|runtime error: |^SUMMARY: [A-Za-z]+Sanitizer'

_ns_cleanup() {
    local rc=$? pid log
    if [ -n "${NS_RGW_OWN_DIR:-}" ]; then
        bash "$top_srcdir/tests/tools/ceph-rgw.sh" stop "$NS_RGW_OWN_DIR" || true
    fi
    for pid in "${NS_BG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${NS_BG_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    # Every server a test started (ns_server_start), stopped by the test or above: a sanitizer report in
    # its log fails the test even where the test itself does not look (the leak check runs at exit).
    for log in "${NS_SRV_LOGS[@]}"; do
        if [ -f "$log" ] && grep -qE "$NS_SANITIZER_RE" "$log"; then
            grep -E -A20 "$NS_SANITIZER_RE" "$log" | head -n 60 >&2
            echo "FAIL: sanitizer report in $log" >&2
            rc=1
        fi
    done
    if [ -n "${T:-}" ] && [ -d "$T" ]; then
        if [ "${NS_KEEP_TMP:-}" = 1 ]; then
            echo "# kept temporary directory $T" >&2
        else
            rm -rf "$T"
        fi
    fi
    exit "$rc"
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

# ns_need TOOL...: each must be a command; a missing one is a hard error (exit 99, ERROR in the test
# summary, never a silent skip).
ns_need() {
    local tool
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "$tool not installed"
            exit 99
        fi
    done
}

# ns_need_pyjwt: set PY to a Python that has both PyJWT and cryptography (the Debian packages live in the
# system Python, which a virtualenv's python3 may hide); neither: exit 99.
ns_need_pyjwt() {
    local p
    PY=
    for p in python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import jwt, cryptography' 2>/dev/null; then
            PY=$p
            return 0
        fi
    done
    echo "python3-jwt and python3-cryptography not installed"
    exit 99
}

# ns_need_py MODULE...: each must import in python3 (python3-MODULE from Debian); missing: exit 99.
ns_need_py() {
    local m
    for m in "$@"; do
        python3 -c "import $m" 2>/dev/null || {
            echo "python3-$m not installed"
            exit 99
        }
    done
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
    ns_need softhsm2-util pkcs11-tool

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

# ns_wait_until SECONDS WHAT CMD [ARGS...]: run CMD (a command or a function) every 0.1 s until it succeeds;
# fail with "WHAT" once SECONDS have passed without. For "wait until the condition holds, then assert": a
# fixed sleep passes before the event on a loaded machine, or waits longer than needed.
ns_wait_until() {
    local max=$1 what=$2 end
    shift 2
    end=$((SECONDS + max))
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || fail "$what (not within $max s)"
        sleep 0.1
    done
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

# ---- S3 (Ceph RGW) ----

# ns_rgw_start BUCKET...: an RGW endpoint with the BUCKETs created. The shared cluster when contrib/test.sh
# started one (NS_RGW_ENDPOINT, NS_RGW_ACCESS_KEY, NS_RGW_SECRET_KEY exported), else a private one-node
# cluster in $T/ceph from tests/tools/ceph-rgw.sh, stopped when the script exits. Bucket names get a
# random suffix so that tests sharing the cluster never meet: the real names are in RGW_BUCKETS (same
# order) and the first one in RGW_BUCKET. Sets S3_ENDPOINT, S3_AK, S3_SK, RGW_DIR (the cluster folder,
# for `ceph-rgw.sh rgw` of a private gateway). A cluster that does not start is a hard error (99).
ns_rgw_start() {
    local b name
    ns_need python3
    ns_need_py botocore
    if [ -n "${NS_RGW_ENDPOINT:-}" ]; then
        [ -n "${NS_RGW_ACCESS_KEY:-}" ] && [ -n "${NS_RGW_SECRET_KEY:-}" ] ||
            fail "NS_RGW_ENDPOINT is set without NS_RGW_ACCESS_KEY and NS_RGW_SECRET_KEY"
        RGW_DIR=${NS_RGW_DIR:-}
        echo "# Ceph RGW (shared) on $NS_RGW_ENDPOINT"
    else
        NS_RGW_OWN_DIR=$T/ceph
        local rc=0
        bash "$top_srcdir/tests/tools/ceph-rgw.sh" start "$NS_RGW_OWN_DIR" >"$T/ceph.env" 2>"$T/ceph.err" || rc=$?
        if [ "$rc" != 0 ]; then
            cat "$T/ceph.err" >&2
            echo "Ceph RGW did not start (ceph-rgw.sh exit $rc)"
            exit 99
        fi
        . "$T/ceph.env"
        RGW_DIR=$NS_RGW_OWN_DIR
        echo "# Ceph RGW (private, $RGW_DIR) on $NS_RGW_ENDPOINT"
    fi
    S3_ENDPOINT=$NS_RGW_ENDPOINT
    S3_AK=$NS_RGW_ACCESS_KEY
    S3_SK=$NS_RGW_SECRET_KEY
    export S3_ENDPOINT S3_AK S3_SK
    RGW_BUCKETS=()
    for b in "$@"; do
        name=$b-$(head -c 5 /dev/urandom | od -An -tx1 | tr -d ' \n')
        ns_rgw_boto create "$name" || fail "creating bucket $name on RGW"
        RGW_BUCKETS+=("$name")
    done
    RGW_BUCKET=${RGW_BUCKETS[0]:-}
}

# ns_rgw_boto create BUCKET: a bucket, through botocore (an independent S3 client).
ns_rgw_boto() {
    /usr/bin/python3 - "$S3_ENDPOINT" "$S3_AK" "$S3_SK" "$@" <<'PY'
import sys
import botocore.session
from botocore.config import Config
ep, ak, sk, op = sys.argv[1:5]
s3 = botocore.session.get_session().create_client(
    "s3", endpoint_url=ep, region_name="us-east-1", aws_access_key_id=ak, aws_secret_access_key=sk,
    config=Config(s3={"addressing_style": "path"}))
if op == "create":
    s3.create_bucket(Bucket=sys.argv[5])
PY
}

# ---- the fault-injecting PKCS#11 module (tests/tools/faulty-pkcs11.c; rules in its header comment) ----

# ns_faulty_module [REAL_MODULE]: use the fault module around REAL_MODULE (default SoftHSM). Sets
# FAULTY_MODULE (the path to put in a URI's module-path=) and exports the module's settings: the real
# module, the control file $T/faults (no faults until ns_fault writes it), the log of injected faults
# $T/faults.log and the session report $T/sessions. Any process started afterwards that loads
# $FAULTY_MODULE (the CLI, a server, p11-kit server) follows the rules in $T/faults, re-read on every call.
ns_faulty_module() {
    FAULTY_MODULE=$top_builddir/tests/tools/.libs/faulty-pkcs11.so
    if [ ! -f "$FAULTY_MODULE" ]; then
        echo "$FAULTY_MODULE not built (make check builds it; by hand: make tests/tools/faulty-pkcs11.la)"
        exit 99
    fi
    FAULTY_PKCS11_MODULE=${1:-$SOFTHSM_MODULE}
    FAULTY_PKCS11_CONTROL=$T/faults
    FAULTY_PKCS11_LOG=$T/faults.log
    FAULTY_PKCS11_SESSIONS=$T/sessions
    export FAULTY_MODULE FAULTY_PKCS11_MODULE FAULTY_PKCS11_CONTROL FAULTY_PKCS11_LOG FAULTY_PKCS11_SESSIONS
    rm -f "$FAULTY_PKCS11_CONTROL" "$FAULTY_PKCS11_SESSIONS"
    : >"$FAULTY_PKCS11_LOG"
}

# ns_fault RULE...: replace the fault rules with these (one rule per argument), atomically; the log of
# injected faults starts empty. E.g. ns_fault "fail C_Decrypt CKR_DEVICE_ERROR count=1"; ns_fault "remove 5".
ns_fault() {
    printf '%s\n' "$@" >"$FAULTY_PKCS11_CONTROL.tmp"
    mv -f "$FAULTY_PKCS11_CONTROL.tmp" "$FAULTY_PKCS11_CONTROL"
    : >"$FAULTY_PKCS11_LOG"
    echo "# faults: $*"
}

# ns_fault_clear: no faults any more.
ns_fault_clear() {
    ns_fault
}

# ns_fault_fired STRING: fail unless the module logged an injected fault containing STRING
# ("C_Decrypt CKR_DEVICE_ERROR", "C_Sign corrupt", "token removed"): a fault test must prove it ran.
ns_fault_fired() {
    assert_contains "$FAULTY_PKCS11_LOG" "$1" "the fault '$1' was injected"
}

# ns_sessions FIELD: a number from the session report of the last process that used the module (open,
# max, opened, closed, finalized).
ns_sessions() {
    sed -n "s/^$1 //p" "$FAULTY_PKCS11_SESSIONS"
}

# ns_assert_no_session_leak: the last process finalised the module with no session left open.
ns_assert_no_session_leak() {
    [ -f "$FAULTY_PKCS11_SESSIONS" ] || fail "no session report in $FAULTY_PKCS11_SESSIONS"
    [ "$(ns_sessions finalized)" = 1 ] || fail "the module was not finalised: $(tr '\n' ' ' <"$FAULTY_PKCS11_SESSIONS")"
    [ "$(ns_sessions open)" = 0 ] || fail "sessions left open: $(tr '\n' ' ' <"$FAULTY_PKCS11_SESSIONS")"
}

# ---- TPM: swtpm + tpm2-abrmd on a private D-Bus session bus + tpm2-pkcs11 ----

# _ns_free_port_pair: a free TCP port P on 127.0.0.1 such that P+1 is free too.
_ns_free_port_pair() {
    python3 -c '
import socket
for _ in range(100):
    a = socket.socket()
    a.bind(("127.0.0.1", 0))
    p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        continue
    print(p)
    break'
}

# ns_tpm_start: a software TPM of the test's own. swtpm listens on 127.0.0.1 (two free ports: commands on
# P, its control channel on P+1, where the swtpm TCTI looks for it), a private dbus-daemon --session on a unix socket in $T/tpm carries
# tpm2-abrmd (the resource manager), and tpm2-pkcs11 keeps its store in $T/tpm/store. Exports
# TPM2_PKCS11_MODULE, TPM2_PKCS11_STORE, TPM2_PKCS11_TCTI, TPM2TOOLS_TCTI, DBUS_SESSION_BUS_ADDRESS. All
# three daemons are stopped by PID when the script exits. Missing tools: exit 99.
ns_tpm_start() {
    local d=$T/tpm port i
    ns_need swtpm tpm2_ptool tpm2_getrandom dbus-daemon python3
    [ -x /usr/sbin/tpm2-abrmd ] || {
        echo "tpm2-abrmd not installed"
        exit 99
    }
    TPM2_PKCS11_MODULE=
    for m in /usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so /usr/lib/*/pkcs11/libtpm2_pkcs11.so \
        /usr/lib/*/libtpm2_pkcs11.so.1; do
        if [ -f "$m" ]; then
            TPM2_PKCS11_MODULE=$m
            break
        fi
    done
    [ -n "$TPM2_PKCS11_MODULE" ] || {
        echo "tpm2-pkcs11 (libtpm2_pkcs11.so) not installed"
        exit 99
    }
    ls /usr/lib/*/libtss2-tcti-tabrmd.so.0 >/dev/null 2>&1 || {
        echo "libtss2-tcti-tabrmd0 not installed"
        exit 99
    }
    mkdir -p "$d/state" "$d/store"
    port=$(_ns_free_port_pair)
    swtpm socket --tpm2 --tpmstate dir="$d/state" --server type=tcp,port="$port",bindaddr=127.0.0.1 \
        --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear >"$d/swtpm.log" 2>&1 &
    ns_bg_pid $!
    for i in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
    done
    cat >"$d/bus.conf" <<EOC
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$d/bus</listen>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
EOC
    dbus-daemon --config-file="$d/bus.conf" --nofork >"$d/dbus.log" 2>&1 &
    ns_bg_pid $!
    for i in $(seq 1 100); do
        [ -S "$d/bus" ] && break
        sleep 0.05
    done
    [ -S "$d/bus" ] || fail "dbus-daemon did not start: $(cat "$d/dbus.log")"
    DBUS_SESSION_BUS_ADDRESS=unix:path=$d/bus
    export DBUS_SESSION_BUS_ADDRESS
    /usr/sbin/tpm2-abrmd --session --tcti="swtpm:host=127.0.0.1,port=$port" --allow-root \
        >"$d/abrmd.log" 2>&1 &
    ns_bg_pid $!
    TPM2_PKCS11_TCTI=tabrmd:bus_type=session
    TPM2TOOLS_TCTI=$TPM2_PKCS11_TCTI
    TPM2_PKCS11_STORE=$d/store
    export TPM2_PKCS11_MODULE TPM2_PKCS11_TCTI TPM2TOOLS_TCTI TPM2_PKCS11_STORE
    for i in $(seq 1 100); do
        tpm2_getrandom 4 >/dev/null 2>&1 && break
        sleep 0.1
    done
    tpm2_getrandom 4 >/dev/null 2>&1 || {
        cat "$d/swtpm.log" "$d/abrmd.log" >&2
        fail "the software TPM did not answer through tpm2-abrmd"
    }
    echo "# swtpm on 127.0.0.1:$port, tpm2-abrmd on $DBUS_SESSION_BUS_ADDRESS, store $TPM2_PKCS11_STORE"
}

# ns_tpm_token LABEL PIN: a tpm2-pkcs11 token (tpm2_ptool init + addtoken); the PIN also in $T/pin-LABEL.
ns_tpm_token() {
    local label=$1 pin=$2
    tpm2_ptool init --path="$TPM2_PKCS11_STORE" >"$T/ptool.out" 2>&1 || {
        cat "$T/ptool.out" >&2
        fail "tpm2_ptool init failed"
    }
    tpm2_ptool addtoken --pid=1 --label="$label" --userpin="$pin" --sopin="so-$pin" \
        --path="$TPM2_PKCS11_STORE" >"$T/ptool.out" 2>&1 || {
        cat "$T/ptool.out" >&2
        fail "tpm2_ptool addtoken $label failed"
    }
    (
        umask 077
        printf '%s' "$pin" >"$T/pin-$label"
    )
}

# ns_tpm_key TOKEN PIN KEY-LABEL ALGORITHM: a key pair in the TPM token (tpm2_ptool addkey; ALGORITHM
# rsa2048, rsa3072, ecc256, ...).
ns_tpm_key() {
    tpm2_ptool addkey --label="$1" --userpin="$2" --key-label="$3" --algorithm="$4" \
        --path="$TPM2_PKCS11_STORE" >"$T/ptool.out" 2>&1 || {
        cat "$T/ptool.out" >&2
        fail "tpm2_ptool addkey $3 ($4) failed"
    }
}

# ---- the NSS softoken through p11-kit ----

# _ns_first_file PATH...: print the first PATH (a glob may have expanded to several) that is a file; 1 if none.
_ns_first_file() {
    local f
    for f in "$@"; do
        if [ -f "$f" ]; then
            printf '%s\n' "$f"
            return 0
        fi
    done
    return 1
}

# ns_nss_token PIN: a fresh NSS softoken database in $T/nss (`certutil -N` with PIN, also written to
# $T/pin-nss), registered with p11-kit by a module file whose x-init-reserved line passes NSS its init string
# (the softoken refuses C_Initialize without one), in a private p11-kit user configuration ($T/nss-home,
# `user-config: only`: no other module is loaded). URIs without module-path= reach it through the p11-kit proxy
# as token "NSS Certificate DB": NSS_URI is "pkcs11:token=NSS%20Certificate%20DB" and NSS_Q the query for the
# PIN; NSS_PROXY is p11-kit-proxy.so (for pkcs11-tool --module). p11-kit reads no user configuration in a process running as root, so as root NSS_RUN (a command
# prefix: `"${NSS_RUN[@]}" CMD ARGS...`) runs CMD as nobody (setpriv), and $T is handed to nobody; NS_CLI is
# pointed at a wrapper that does the same, so ns_run/expect_rc reach the token. Missing tools: exit 99.
ns_nss_token() {
    local pin=$1 softokn
    ns_need certutil p11-kit pkcs11-tool
    softokn=$(_ns_first_file /usr/lib/x86_64-linux-gnu/libsoftokn3.so /usr/lib/*/libsoftokn3.so) || {
        echo "the NSS softoken (libsoftokn3.so, Debian libnss3) not installed"
        exit 99
    }
    NSS_PROXY=$(_ns_first_file /usr/lib/x86_64-linux-gnu/p11-kit-proxy.so /usr/lib/*/p11-kit-proxy.so) || {
        echo "p11-kit-proxy.so (p11-kit-modules) not installed"
        exit 99
    }
    mkdir -p "$T/nss" "$T/nss-home/.config/pkcs11/modules"
    (
        umask 077
        printf '%s' "$pin" >"$T/pin-nss"
        printf '%s\n' "$pin" >"$T/nss-pwfile"
    )
    certutil -N -d "sql:$T/nss" -f "$T/nss-pwfile" >"$T/certutil.out" 2>&1 || {
        cat "$T/certutil.out" >&2
        fail "certutil -N (a fresh NSS database in $T/nss) failed"
    }
    rm -f "$T/nss-pwfile"
    printf 'user-config: only\n' >"$T/nss-home/.config/pkcs11/pkcs11.conf"
    cat >"$T/nss-home/.config/pkcs11/modules/nss.module" <<EOF
module: $softokn
x-init-reserved: configdir='sql:$T/nss' certPrefix='' keyPrefix='' secmod='secmod.db' flags=
EOF
    NSS_RUN=(env "HOME=$T/nss-home")
    if [ "$(id -u)" = 0 ]; then
        ns_need setpriv
        NSS_RUN=(setpriv --reuid=65534 --regid=65534 --clear-groups -- "${NSS_RUN[@]}")
        chown -R 65534:65534 "$T"
    fi
    NSS_URI="pkcs11:token=NSS%20Certificate%20DB"
    NSS_Q="pin-source=file:$T/pin-nss"
    NSS_MODULE=$softokn
    local cli=$NS_CLI
    if [ "$(id -u)" = 0 ]; then
        # nobody may not reach the build tree (a clone in a 0700 folder) nor the sanitizer's suppressions
        # file: run a copy of the CLI from $T, with a copy of the suppressions.
        mkdir -p "$T/nss-bin"
        cp "$NS_CLI" "$T/nss-bin/"
        cli=$T/nss-bin/$(basename "$NS_CLI")
        if [[ "${LSAN_OPTIONS:-}" =~ suppressions=([^:]*) ]] && [ -f "${BASH_REMATCH[1]}" ]; then
            cp "${BASH_REMATCH[1]}" "$T/nss-bin/lsan.supp"
            NSS_RUN+=("LSAN_OPTIONS=${LSAN_OPTIONS/${BASH_REMATCH[1]}/$T/nss-bin/lsan.supp}")
        fi
        chown -R 65534:65534 "$T"
        "${NSS_RUN[@]}" test -x "$cli" || fail "nobody cannot run $cli"
    fi
    printf '#!/usr/bin/env bash\n[ "$(id -u)" != 0 ] || chown -R 65534:65534 %q\nexec' "$T" >"$T/nss-cli"
    printf ' %q' "${NSS_RUN[@]}" "$cli" >>"$T/nss-cli"
    printf ' "$@"\n' >>"$T/nss-cli"
    chmod 0755 "$T/nss-cli"
    NS_CLI=$T/nss-cli
    export NSS_URI NSS_Q NSS_MODULE NSS_PROXY NS_CLI
    "${NSS_RUN[@]}" p11-kit list-modules >"$T/nss-modules.out" 2>&1 || true
    grep -q "token: NSS Certificate DB" "$T/nss-modules.out" || {
        cat "$T/nss-modules.out" >&2
        fail "p11-kit does not list the NSS Certificate DB token"
    }
    echo "# NSS softoken $softokn, database $T/nss, through the p11-kit proxy"
}

# ns_ca_token_issue KEY-URI: `ca init --key KEY-URI` (a P-256 token key, adopted or generated), the bundle in
# $T/ca.pem, and one agent certificate for a fresh P-256 key ($T/leaf.pem) that openssl verifies against it and
# that is signed ecdsa-with-SHA256.
ns_ca_token_issue() {
    expect_rc 0 ca init --key "$1"
    assert_contains "$T/out" "(ecdsa-p256)"
    expect_rc 0 ca bundle -o "$T/ca.pem"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/leaf.key" 2>/dev/null
    openssl pkey -in "$T/leaf.key" -pubout -out "$T/leaf.pub"
    expect_rc 0 ca issue --public-key "$T/leaf.pub" --cn vm-1 --tenant acme --role agent -o "$T/leaf.pem"
    openssl verify -CAfile "$T/ca.pem" "$T/leaf.pem" >/dev/null || fail "openssl rejects the certificate"
    openssl x509 -in "$T/leaf.pem" -noout -text >"$T/leaf.txt"
    assert_contains "$T/leaf.txt" "ecdsa-with-SHA256" "signed with the P-256 token key"
}

# ---- remote tokens: p11-kit server ----

# ns_p11kit_server MODULE TOKEN-URI: forward the token through `p11-kit server` on a unix socket in $T.
# Sets P11KIT_CLIENT_MODULE (p11-kit-client.so, the module-path for the client side) and exports
# P11_KIT_SERVER_ADDRESS; the server is stopped by PID when the script exits.
ns_p11kit_server() {
    local i
    command -v p11-kit >/dev/null 2>&1 || {
        echo "p11-kit not installed"
        exit 99
    }
    P11KIT_CLIENT_MODULE=
    for m in /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so /usr/lib/*/pkcs11/p11-kit-client.so; do
        if [ -f "$m" ]; then
            P11KIT_CLIENT_MODULE=$m
            break
        fi
    done
    [ -n "$P11KIT_CLIENT_MODULE" ] || {
        echo "p11-kit-client.so not installed"
        exit 99
    }
    rm -f "$T/p11kit.sock"
    p11-kit server -f --provider "$1" -n "$T/p11kit.sock" "$2" >"$T/p11kit-server.out" 2>&1 &
    ns_bg_pid $!
    for i in $(seq 1 100); do
        [ -S "$T/p11kit.sock" ] && break
        sleep 0.05
    done
    [ -S "$T/p11kit.sock" ] || fail "p11-kit server did not start: $(cat "$T/p11kit-server.out")"
    P11_KIT_SERVER_ADDRESS=unix:path=$T/p11kit.sock
    export P11KIT_CLIENT_MODULE P11_KIT_SERVER_ADDRESS
    echo "# p11-kit server for $2 on $P11_KIT_SERVER_ADDRESS"
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
    NS_SRV_LOGS+=("$T/$name.log")
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

# ns_server_stop PID [LOG]: SIGTERM, then wait; sets NS_RC to its exit status. With LOG (the server's
# stderr, $T/NAME.log), also fail if it holds a sanitizer report: in the sanitizer build a report ends the
# process with a non-zero status (contrib/test.sh sets abort_on_error/halt_on_error), but not in a run by
# hand without those options.
ns_server_stop() {
    NS_RC=0
    kill -TERM "$1"
    wait "$1" || NS_RC=$?
    if [ -n "${2:-}" ] && grep -qE "$NS_SANITIZER_RE" "$2"; then
        grep -E -A20 "$NS_SANITIZER_RE" "$2" | head -n 60 >&2
        fail "sanitizer report in $2"
    fi
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
