#!/usr/bin/env bash
# bench/bench-token.sh tpm|remote [SECONDS]: run bench-token against a software TPM (swtpm + tpm2-abrmd +
# tpm2-pkcs11) or against SoftHSM forwarded by `p11-kit server`, set up and torn down with the test suite's
# helpers (tests/integration/lib.sh). Build first: make bench-token. Run from the build folder or set
# top_builddir. Figures: doc/benchmarks.md.
mode=${1:?usage: bench-token.sh tpm|remote [SECONDS]}
secs=${2:-2}
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-$PWD}
. "$top_srcdir/tests/integration/lib.sh"
ns_setup
[ -x "$top_builddir/bench-token" ] || fail "no $top_builddir/bench-token: make bench-token"
export BENCH_TOKEN_PIN=bench-pin-1234
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
