#!/usr/bin/env bash
# The RGW benchmarks of doc/benchmarks.md, in one run against one Ceph RGW:
#   1. bench-s3: 4 KiB put and get through our store vs a bare libcurl loop signing the same requests;
#   2. list of 10,000 objects (`nstance-secrets list`, RUNS runs, median);
#   3. rewrap of the 10,000 blobs with --jobs 1, 4 and 8 (file KEKs A and B, alternating direction so that
#      every run re-wraps all of them), next to the storage ceiling measured in step 1;
#   4. the same rewraps with a SoftHSM token KEK (aes-gcm: two keys in one token, alternating), next to the
#      raw token rate on that token in the same run (bench-rewrap's "raw": C_Decrypt + C_Encrypt of one DEK).
# Usage (from the repository root, after make -C _build bench-s3 bench-rewrap tests/tools/ns-fill):
#   bash bench/run-rgw.sh [BUILD_DIR]        (default _build)
# With NS_RGW_ENDPOINT, NS_RGW_ACCESS_KEY and NS_RGW_SECRET_KEY set it uses that gateway; otherwise it starts
# a cluster with tests/tools/ceph-rgw.sh in a temporary folder and stops it at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/_build}" && pwd)
N=${NS_BENCH_N:-10000}
RUNS=${NS_BENCH_RUNS:-3}
tmp=$(mktemp -d /tmp/ns-bench-rgw.XXXXXX)
cleanup() {
    [ -z "${own:-}" ] || bash "$root/tests/tools/ceph-rgw.sh" stop "$tmp/ceph" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
if [ -z "${NS_RGW_ENDPOINT:-}" ]; then
    own=1
    bash "$root/tests/tools/ceph-rgw.sh" start "$tmp/ceph" >"$tmp/env"
    set -a
    . "$tmp/env"
    set +a
fi
ep=$NS_RGW_ENDPOINT
bucket=bench-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
/usr/bin/python3 - "$ep" "$NS_RGW_ACCESS_KEY" "$NS_RGW_SECRET_KEY" "$bucket" <<'PY'
import sys, botocore.session
from botocore.config import Config
ep, ak, sk, b = sys.argv[1:5]
botocore.session.get_session().create_client("s3", endpoint_url=ep, region_name="us-east-1",
    aws_access_key_id=ak, aws_secret_access_key=sk,
    config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket=b)
PY
echo "# RGW $ep, bucket $bucket, $(radosgw --version 2>/dev/null | head -n 1)"

echo "## 1. bench-s3 (4 KiB objects, 500 per run, 5 runs)"
AWS_ACCESS_KEY_ID=$NS_RGW_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$NS_RGW_SECRET_KEY \
    "$build/bench-s3" "$ep" "$bucket" 500 5 | tee "$tmp/s3.out"

head -c 32 /dev/urandom >"$tmp/kek-a"
head -c 32 /dev/urandom >"$tmp/kek-b"
chmod 600 "$tmp/kek-a" "$tmp/kek-b"
cfg() {
    {
        printf 'cluster_id: bench\nstorage:\n  backend: s3\n  bucket: %s\n  endpoint: %s\n  path_style: true\n' \
            "$bucket" "$ep"
        printf '  credentials: {access_key_id: %s, secret_access_key: %s}\n' "$NS_RGW_ACCESS_KEY" "$NS_RGW_SECRET_KEY"
        printf 'encryption_key: {source: file, path: %s}\n' "$1"
        printf 'old_encryption_keys:\n  - {source: file, path: %s}\n' "$2"
        printf 'pkcs11: {sessions: 8}\n'
    } >"$tmp/config.yaml"
}
cfg "$tmp/kek-a" "$tmp/kek-b"
t0=$(date +%s.%N)
"$build/tests/tools/ns-fill" -c "$tmp/config.yaml" -n "$N" -p r/b -j 8 >"$tmp/fill"
t1=$(date +%s.%N)
echo "## fill: $N blobs of 64 bytes with ns-fill -j 8 in $(echo "$t1 - $t0" | bc) s"

echo "## 2. list of $N objects ($RUNS runs)"
times=()
for r in $(seq 1 "$RUNS"); do
    t0=$(date +%s.%N)
    "$build/nstance-secrets" -c "$tmp/config.yaml" list r/ >"$tmp/list"
    t1=$(date +%s.%N)
    [ "$(wc -l <"$tmp/list")" = "$N" ] || { echo "list: wrong count" >&2; exit 1; }
    t=$(echo "$t1 - $t0" | bc)
    times+=("$t")
    echo "run $r: list $N in $t s"
done
med=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p")
echo "median list: $med s ($(echo "$N / $med" | bc) names/s)"

# timed_rewrap JOBS LABEL: one `rewrap --jobs JOBS` of all N blobs with $tmp/config.yaml, checked and timed.
timed_rewrap() {
    local t0 t1 t
    t0=$(date +%s.%N)
    "$build/nstance-secrets" -c "$tmp/config.yaml" rewrap --jobs "$1" >"$tmp/rw"
    t1=$(date +%s.%N)
    grep -q "^rewrap: $N blobs, $N re-wrapped, 0 already under the primary key, 0 failed" "$tmp/rw" ||
        { cat "$tmp/rw" >&2; exit 1; }
    t=$(echo "$t1 - $t0" | bc)
    echo "$2 --jobs $1: $N in $t s = $(echo "$N / $t" | bc) blobs/s"
}

echo "## 3. rewrap of $N blobs (file KEKs; direction alternates)"
dir=ab
# NS_BENCH_STEP3=0 skips this step (step 4 alone takes some minutes).
for jobs in $([ "${NS_BENCH_STEP3:-1}" = 0 ] || echo 1 4 8 1 4 8); do
    if [ "$dir" = ab ]; then cfg "$tmp/kek-b" "$tmp/kek-a"; dir=ba; else cfg "$tmp/kek-a" "$tmp/kek-b"; dir=ab; fi
    timed_rewrap "$jobs" rewrap
done
rp=$(sed -n 's/^median put: .*raw libcurl \([0-9]*\)\/s.*/\1/p' "$tmp/s3.out")
rg=$(sed -n 's/^median get: .*raw libcurl \([0-9]*\)\/s.*/\1/p' "$tmp/s3.out")
echo "storage ceiling for one connection (a GET and a PUT per blob, raw libcurl rates above): $(echo "1 / (1/$rp + 1/$rg)" | bc -l | cut -d. -f1) blobs/s"

echo "## 4. rewrap of $N blobs on RGW with a SoftHSM token KEK (aes-gcm), next to the raw token rate"
mod=$(ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so 2>/dev/null | head -n 1)
mkdir -p "$tmp/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$tmp/tokens" >"$tmp/softhsm2.conf"
export SOFTHSM2_CONF=$tmp/softhsm2.conf
softhsm2-util --init-token --free --label bench --so-pin 12345678 --pin bench-pin-1234 >/dev/null
printf 'bench-pin-1234' >"$tmp/pin"
chmod 600 "$tmp/pin"
turi() { printf 'pkcs11:token=bench;object=%s?module-path=%s&pin-source=file:%s' "$1" "$mod" "$tmp/pin"; }
tcfg() { # tcfg PRIMARY-URI OLD-URI: both token keys, and file KEK A for the blobs still under it
    {
        printf 'cluster_id: bench\nstorage:\n  backend: s3\n  bucket: %s\n  endpoint: %s\n  path_style: true\n' \
            "$bucket" "$ep"
        printf '  credentials: {access_key_id: %s, secret_access_key: %s}\n' "$NS_RGW_ACCESS_KEY" "$NS_RGW_SECRET_KEY"
        printf 'encryption_key: {source: pkcs11, uri: "%s", mechanism: aes-gcm}\n' "$1"
        printf 'old_encryption_keys:\n  - {source: pkcs11, uri: "%s", mechanism: aes-gcm}\n' "$2"
        printf '  - {source: file, path: %s}\n  - {source: file, path: %s}\n' "$tmp/kek-a" "$tmp/kek-b"
        printf 'pkcs11: {sessions: 8}\n'
    } >"$tmp/config.yaml"
}
for k in tk1 tk2; do
    tcfg "$(turi tk1)" "$(turi tk2)"
    "$build/nstance-secrets" -c "$tmp/config.yaml" kek generate --uri "$(turi $k)" --mechanism aes-gcm >/dev/null
done
tcfg "$(turi tk1)" "$(turi tk2)"
"$build/nstance-secrets" -c "$tmp/config.yaml" rewrap --jobs 8 >"$tmp/rw" # file KEK -> tk1 (not timed)
dir=12
for jobs in 1 4 8 1 4 8; do
    if [ "$dir" = 12 ]; then tcfg "$(turi tk2)" "$(turi tk1)"; dir=21; else tcfg "$(turi tk1)" "$(turi tk2)"; dir=12; fi
    timed_rewrap "$jobs" "token rewrap"
    # The token alone, right after, on a token of its own (bench-rewrap makes one): raw ops/s with as many
    # sessions as the machine has cores (bench-rewrap takes 1 or 2 jobs; SoftHSM does not go faster with more).
    rj=$([ "$jobs" -gt 2 ] && echo 2 || echo "$jobs")
    "$build/bench-rewrap" -n 2000 -N 10 -r 1 -m aes-gcm -j "$rj" >"$tmp/raw" 2>&1 || { cat "$tmp/raw" >&2; exit 1; }
    grep -E "^(mechanism|aes-gcm)" "$tmp/raw" | sed "s/^/  bench-rewrap -j $rj: /"
done
