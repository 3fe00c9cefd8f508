#!/usr/bin/env bash
# bench/bench-token.sh tpm|remote|nss|softhsm [SECONDS [ROUNDS]]: run bench-token against a software TPM
# (swtpm + tpm2-abrmd + tpm2-pkcs11) or against SoftHSM forwarded by `p11-kit server`; or bench-open (aes-gcm
# and rsa-oaep, 1 thread) and bench-jwt on the NSS softoken (a fresh NSS database registered with p11-kit,
# reached through the p11-kit proxy: ns_nss_token; as root the programs run as nobody) or, for the same
# figures on SoftHSM, on their own SoftHSM token. Set up and torn down with the test suite's helpers
# (tests/integration/lib.sh). Build first: make bench-token bench-open bench-jwt. Run from the build folder or
# set top_builddir. Figures: doc/benchmarks.md.
mode=${1:?usage: bench-token.sh tpm|remote|nss|softhsm [SECONDS [ROUNDS]]}
secs=${2:-2}
rounds=${3:-5}
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-$PWD}
. "$top_srcdir/tests/integration/lib.sh"
ns_setup
export BENCH_TOKEN_PIN=bench-pin-1234
# bench-open and bench-jwt: ours vs the raw PKCS#11 call in the same run, on NSS or on SoftHSM.
open_jwt() {
    local p
    for p in bench-open bench-jwt; do
        [ -x "$top_builddir/$p" ] || fail "no $top_builddir/$p: make $p"
    done
    "$@" "$top_builddir/bench-open" -m aes-gcm,rsa-oaep -t 1 -d "$secs" -r "$rounds"
    "$@" "$top_builddir/bench-jwt" -d "$secs" -r "$rounds"
}
case $mode in
nss)
    # bench-util.c's BENCH_USER_PIN: the programs log in with it.
    ns_nss_token bench-user-1234
    echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
    open_jwt "${NSS_RUN[@]}" env BENCH_TOKEN_MODULE="$NSS_PROXY" "BENCH_TOKEN_LABEL=NSS Certificate DB"
    echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit 0
    ;;
softhsm)
    echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
    open_jwt env
    echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit 0
    ;;
esac
[ -x "$top_builddir/bench-token" ] || fail "no $top_builddir/bench-token: make bench-token"
case $mode in
tpm)
    ns_tpm_start
    ns_tpm_token bench "$BENCH_TOKEN_PIN"
    ns_tpm_key bench "$BENCH_TOKEN_PIN" kek rsa2048
    ns_tpm_key bench "$BENCH_TOKEN_PIN" ec ecc256
    module=$TPM2_PKCS11_MODULE
    ;;
remote)
    ns_token bench "$BENCH_TOKEN_PIN"
    ns_p11 bench "$BENCH_TOKEN_PIN" --keypairgen --key-type RSA:2048 --label kek --id 01 || fail "RSA key"
    ns_p11 bench "$BENCH_TOKEN_PIN" --keypairgen --key-type EC:prime256v1 --label ec --id 02 || fail "EC key"
    ns_p11kit_server "$SOFTHSM_MODULE" "pkcs11:token=bench"
    module=$P11KIT_CLIENT_MODULE
    ;;
*) fail "mode is tpm or remote" ;;
esac
"$top_builddir/bench-token" "$module" bench kek ec "$secs"
