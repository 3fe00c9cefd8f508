#!/usr/bin/env bash
# The RGW benchmarks of doc/benchmarks.md, in one run against one Ceph RGW:
#   1. bench-s3: 4 KiB put and get through our store vs a bare libcurl loop signing the same requests;
#   2. list of 10,000 objects (`nstance-secrets list`, RUNS runs, median);
#   3. rewrap of the 10,000 blobs with --jobs 1, 4 and 8 (file KEKs A and B, alternating direction so that
#      every run re-wraps all of them), next to the storage ceiling measured in step 1.
# Usage (from the repository root, after make -C _build bench-s3 tests/tools/ns-fill):
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

echo "## 3. rewrap of $N blobs (file KEKs; direction alternates)"
dir=ab
for jobs in 1 4 8 1 4 8; do
    if [ "$dir" = ab ]; then cfg "$tmp/kek-b" "$tmp/kek-a"; dir=ba; else cfg "$tmp/kek-a" "$tmp/kek-b"; dir=ab; fi
    t0=$(date +%s.%N)
    "$build/nstance-secrets" -c "$tmp/config.yaml" rewrap --jobs "$jobs" >"$tmp/rw"
    t1=$(date +%s.%N)
    grep -q "^rewrap: $N blobs, $N re-wrapped, 0 already under the primary key, 0 failed" "$tmp/rw" ||
        { cat "$tmp/rw" >&2; exit 1; }
    t=$(echo "$t1 - $t0" | bc)
    echo "rewrap --jobs $jobs: $N in $t s = $(echo "$N / $t" | bc) blobs/s"
done
rp=$(sed -n 's/^median put: .*raw libcurl \([0-9]*\)\/s.*/\1/p' "$tmp/s3.out")
rg=$(sed -n 's/^median get: .*raw libcurl \([0-9]*\)\/s.*/\1/p' "$tmp/s3.out")
echo "storage ceiling for one connection (a GET and a PUT per blob, raw libcurl rates above): $(echo "1 / (1/$rp + 1/$rg)" | bc -l | cut -d. -f1) blobs/s"
