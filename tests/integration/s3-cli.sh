#!/usr/bin/env bash
# Covers: every CLI command that works on the file backend works unchanged on the s3 backend (s3rver).
#
# In detail: s3rver started on 127.0.0.1 (a free port) with a bucket; path-style addressing, a prefix inside
# the bucket, explicit credentials. put/get round trips (text, binary with NUL bytes, empty, exactly 1 MiB),
# 1 MiB + 1 refused (8) with nothing stored, get -o (0600), get/delete of a missing name (3), list and list
# PREFIX, delete; objects land under PREFIX/cluster/secret/ and hold no plaintext; keys in the bucket that
# are not valid names (or lie outside the prefix) are skipped by list with a warning; 1,100 blobs written by
# ns-fill through the library (two threads sharing the store) are listed across ListObjectsV2 pages and
# read back; verify counts per KEK; rewrap to a new primary KEK and verify again; secret create / rotate /
# promote / retire / show / list / export; a wrong access key id and a missing bucket are storage errors
# (6) naming the bucket and S3's error Code; credentials from the environment when the config has none;
# ca init/issue/bundle/rotate/list/retire (the log entry in the bucket) and nonce issue/verify/consume (the
# single-use marker in the bucket, a replay refused with 11).
#
# NS_S3_BACKEND=rgw (tests/integration/rgw-cli.sh) runs the same script against Ceph RGW (ns_rgw_start:
# the shared cluster of contrib/test.sh, or a private one), with random bucket names, and adds what s3rver
# cannot show because it ignores the conditional headers and signatures: a create over an existing secret
# (7), two and eight writers racing one compare-and-swap (exactly one wins, the rest conflict), and a
# wrong secret key (6, SignatureDoesNotMatch).
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup
BACKEND=${NS_S3_BACKEND:-s3rver}
ns_need python3
ns_need_py botocore
case $BACKEND in
s3rver)
    ns_s3rver_start nstance-test other-bucket
    BK=nstance-test
    BK2=other-bucket
    S3_AK=S3RVER
    S3_SK=S3RVER
    ;;
rgw)
    ns_rgw_start nstance-test other-bucket
    BK=${RGW_BUCKETS[0]}
    BK2=${RGW_BUCKETS[1]}
    ;;
*) fail "NS_S3_BACKEND: unknown backend '$BACKEND' (s3rver or rgw)" ;;
esac

head -c 32 /dev/urandom >"$T/kek-a"
head -c 32 /dev/urandom >"$T/kek-b"
chmod 600 "$T/kek-a" "$T/kek-b"
KA="{source: file, path: $T/kek-a}"
KB="{source: file, path: $T/kek-b}"

# s3cfg PRIMARY [OLD]: the config, with the S3 store.
s3cfg() {
    {
        printf 'cluster_id: s3cli\n'
        printf 'storage:\n  backend: s3\n  bucket: %s\n  prefix: clusters/one\n' "$BK"
        printf '  endpoint: %s\n  path_style: true\n  region: us-east-1\n' "$S3_ENDPOINT"
        printf '  retries: {max: 2, base_delay_ms: 10}\n'
        printf '  credentials: {access_key_id: %s, secret_access_key: %s}\n' "$S3_AK" "$S3_SK"
        printf 'encryption_key: %s\n' "$1"
        if [ -n "${2:-}" ]; then
            printf 'old_encryption_keys:\n  - %s\n' "$2"
        fi
    } >"$T/config.yaml"
}

# boto OP ARGS...: talk to the S3 server directly (a second, independent S3 client).
boto() {
    python3 - "$S3_ENDPOINT" "$S3_AK" "$S3_SK" "$@" <<'PY'
import sys
import botocore.session
from botocore.config import Config
ep, ak, sk = sys.argv[1:4]
sys.argv[1:4] = [ep]
op = sys.argv[2]
s3 = botocore.session.get_session().create_client(
    "s3", endpoint_url=ep, region_name="us-east-1", aws_access_key_id=ak,
    aws_secret_access_key=sk, config=Config(s3={"addressing_style": "path"}))
if op == "put":
    s3.put_object(Bucket=sys.argv[3], Key=sys.argv[4], Body=sys.argv[5].encode() if len(sys.argv) > 5 else b"junk")
elif op == "keys":
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[3], Prefix=sys.argv[4])
    for page in pages:
        for o in page.get("Contents", []):
            print(o["Key"])
elif op == "get":
    sys.stdout.buffer.write(s3.get_object(Bucket=sys.argv[3], Key=sys.argv[4])["Body"].read())
elif op == "delete":
    s3.delete_object(Bucket=sys.argv[3], Key=sys.argv[4])
elif op == "dump":
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[3])
    for page in pages:
        for o in page.get("Contents", []):
            sys.stdout.buffer.write(s3.get_object(Bucket=sys.argv[3], Key=o["Key"])["Body"].read())
PY
}

s3cfg "$KA"

# ---- put / get ----
MARK=plaintext-marker-s3-5d1c0a
printf 'hello %s\n' "$MARK" >"$T/p-text"
expect_rc 0 put greeting <"$T/p-text"
expect_rc 0 get greeting
cmp "$T/out" "$T/p-text" || fail "get greeting: content differs"
python3 -c 'import sys; sys.stdout.buffer.write(b"\x00\x01\x00bin\x00" + bytes(range(256)) * 3)' >"$T/p-bin"
expect_rc 0 put bin/nul.dat "$T/p-bin"
expect_rc 0 get bin/nul.dat
cmp "$T/out" "$T/p-bin" || fail "get bin/nul.dat: content differs"
expect_rc 0 put empty </dev/null
expect_rc 0 get empty
[ ! -s "$T/out" ] || fail "get empty: expected no output"
head -c 1048576 /dev/urandom >"$T/p-1m"
expect_rc 0 put big/onemib "$T/p-1m"
expect_rc 0 get big/onemib
cmp "$T/out" "$T/p-1m" || fail "get big/onemib: content differs"
cat "$T/p-1m" <(printf x) >"$T/p-1m1"
expect_rc 8 put big/toolarge "$T/p-1m1"
expect_rc 3 get big/toolarge
expect_rc 0 put greeting "$T/p-bin"
expect_rc 0 get greeting
cmp "$T/out" "$T/p-bin" || fail "put without --create did not replace the content"
expect_rc 0 put greeting "$T/p-text"
expect_rc 0 get greeting -o "$T/o-file"
assert_file_mode "$T/o-file" 600
cmp "$T/o-file" "$T/p-text" || fail "get -o: content differs"
expect_rc 3 get nosuch
expect_rc 3 get nosuch -o "$T/o-missing"
[ ! -e "$T/o-missing" ] || fail "get -o of a missing name created the file"

# ---- where the objects are, and what they hold ----
boto keys $BK "" >"$T/keys"
assert_contains "$T/keys" "clusters/one/cluster/secret/greeting" "objects live under the prefix"
assert_contains "$T/keys" "clusters/one/cluster/secret/bin/nul.dat" "folders are key segments"
boto get $BK clusters/one/cluster/secret/greeting >"$T/raw-greeting"
assert_eq "$(head -c 4 "$T/raw-greeting")" "NSEN" "the stored object is an envelope"
if [ "$BACKEND" = s3rver ] && grep -rqaF -- "$MARK" "$T/s3rver"; then
    fail "the bucket holds the plaintext marker"
fi
boto dump $BK >"$T/all-objects"
[ -s "$T/all-objects" ] || fail "boto dump: no objects read"
if grep -qaF -- "$MARK" "$T/all-objects"; then
    fail "an object holds the plaintext marker"
fi

# ---- list ----
expect_rc 0 list
printf 'big/onemib\nbin/nul.dat\nempty\ngreeting\n' >"$T/want"
cmp "$T/out" "$T/want" || { cat "$T/out" >&2; fail "list: unexpected names"; }
expect_rc 0 list bi
printf 'big/onemib\nbin/nul.dat\n' >"$T/want"
cmp "$T/out" "$T/want" || { cat "$T/out" >&2; fail "list bi: unexpected names"; }
expect_rc 0 list nothing/
[ ! -s "$T/out" ] || fail "list nothing/: expected no names"
# keys that are not valid names, or outside the prefix, are skipped with a warning
boto put $BK "clusters/one/cluster/secret/bad..x/.hidden"
boto put $BK "clusters/one/cluster/secret/sp ace"
boto put $BK "clusters/onex/cluster/secret/elsewhere"
expect_rc 0 list
printf 'big/onemib\nbin/nul.dat\nempty\ngreeting\n' >"$T/want"
cmp "$T/out" "$T/want" || { cat "$T/out" >&2; fail "list with invalid keys: unexpected names"; }
assert_contains "$T/err" "not a valid object name" "list warns about skipped keys"
boto delete $BK "clusters/one/cluster/secret/bad..x/.hidden"
boto delete $BK "clusters/one/cluster/secret/sp ace"

# ---- delete ----
expect_rc 0 delete empty
expect_rc 3 get empty
expect_rc 3 delete empty

# ---- many blobs: pages of ListObjectsV2, threads sharing the store ----
"$top_builddir/tests/tools/ns-fill" -c "$T/config.yaml" -n 1100 -p many/m -j 2 >"$T/fill" 2>"$T/fill.err" ||
    { cat "$T/fill.err" >&2; fail "ns-fill into s3"; }
expect_rc 0 list many/
assert_eq "$(wc -l <"$T/out")" 1100 "list many/: every name across pages"
assert_eq "$(head -n 1 "$T/out")" "many/m00000" "list many/: sorted"
assert_eq "$(tail -n 1 "$T/out")" "many/m01099" "list many/: sorted"
"$top_builddir/tests/tools/ns-fill" -c "$T/config.yaml" --check "$T/fill" -j 2 >"$T/check" 2>"$T/check.err" ||
    { cat "$T/check.err" >&2; fail "ns-fill --check from s3"; }
assert_contains "$T/check" "checked 1100" "every filled blob reads back"

# ---- verify, rewrap ----
N=1103 # greeting, bin/nul.dat, big/onemib, 1100 many/
expect_rc 0 verify
assert_contains "$T/out" "verified $N blobs: $N ok, 0 failed" "verify under A"
s3cfg "$KB" "$KA"
expect_rc 0 rewrap --jobs 2
assert_contains "$T/out" "rewrap: $N blobs, $N re-wrapped, 0 already under the primary key, 0 failed" "rewrap to B"
expect_rc 0 rewrap
assert_contains "$T/out" "rewrap: $N blobs, 0 re-wrapped, $N already under the primary key, 0 failed" \
    "a second rewrap has nothing to do"
s3cfg "$KB"
expect_rc 0 verify
assert_contains "$T/out" "verified $N blobs: $N ok, 0 failed" "verify under B alone"
expect_rc 0 get greeting
cmp "$T/out" "$T/p-text" || fail "get after rewrap: content differs"

# ---- secrets ----
S=sig/nonce.key
expect_rc 0 secret create "$S" --type ecdsa-p256
A=$(sed -n 's/^created .*, key \([A-Za-z0-9_-]*\)$/\1/p' "$T/out")
[ -n "$A" ] || fail "secret create: no key id"
expect_rc 0 secret rotate "$S" --pending
B=$(sed -n 's/^rotated .*: new key \([A-Za-z0-9_-]*\).*$/\1/p' "$T/out")
[ -n "$B" ] || fail "secret rotate: no key id"
expect_rc 0 secret promote "$S"
expect_rc 0 secret retire "$S"
expect_rc 0 secret show "$S"
assert_contains "$T/out" "$B" "secret show: the promoted key"
assert_not_contains "$T/out" "$A" "secret show: the retired key is gone"
expect_rc 0 secret list
assert_contains "$T/out" "$S" "secret list names the secret"
expect_rc 0 secret export "$S" --format pem
openssl pkey -in "$T/out" -noout || fail "secret export: not a private key"
# (create over an existing secret is exit 7 on S3, but s3rver ignores If-None-Match: s3-faults.sh covers it)
if [ "$BACKEND" = rgw ]; then
    expect_rc 7 secret create "$S" --type ecdsa-p256
    expect_rc 0 secret show "$S"
    assert_contains "$T/out" "$B" "a refused create changes nothing"
    # compare-and-swap races: exactly one writer wins, every other one gets a conflict (exit 7 in the CLI);
    # the first race starts with a fresh process, so it also covers the If-Match form being learned
    expect_rc 0 put race/one </dev/null
    for j in 2 8; do
        "$top_builddir/tests/tools/ns-fill" -c "$T/config.yaml" --race race/one -j "$j" >"$T/race" 2>"$T/race.err" ||
            { cat "$T/race" "$T/race.err" >&2; fail "CAS race with $j writers"; }
        assert_contains "$T/race" "race: 1 won, $((j - 1)) conflict, 0 other" "CAS race with $j writers"
    done
    expect_rc 0 delete race/one
fi
expect_rc 0 secret create tok --type random --bytes 32
expect_rc 0 secret export tok --format raw
assert_eq "$(stat -c %s "$T/out")" 32 "random secret: 32 bytes"

# ---- the CA and registration nonces on S3 ----
s3cfg "$KB"
printf 'cache_dir: %s\nca: {subject: {cn: "S3 CA"}}\n' "$T/cache" >>"$T/config.yaml"
expect_rc 0 ca init --type ecdsa-p256
expect_rc 0 ca bundle -o "$T/s3-ca.pem"
openssl genpkey -algorithm ed25519 -out "$T/leaf.key" 2>/dev/null
openssl pkey -in "$T/leaf.key" -pubout -out "$T/leaf.pub"
expect_rc 0 ca issue --public-key "$T/leaf.pub" --cn vm-s3 --tenant acme --role agent -o "$T/s3-leaf.pem"
openssl verify -CAfile "$T/s3-ca.pem" "$T/s3-leaf.pem" >/dev/null 2>&1 || fail "a certificate issued on S3 verifies"
boto keys $BK clusters/one/shard/default/certlog/ >"$T/keys"
grep -q "acme\.[0-9]*\.vm-s3\.json" "$T/keys" || fail "the certificate log entry is in the bucket"
expect_rc 0 ca rotate
expect_rc 0 ca list
[ "$(grep -c . "$T/out")" = 2 ] || fail "two CA certificates after a rotation on S3"
expect_rc 0 ca retire
expect_rc 0 secret create registration-nonce.key --type ed25519
expect_rc 0 nonce issue --kind agent --sub vm-s3 --tenant acme
cp "$T/out" "$T/s3.jwt"
expect_rc 0 nonce verify --file "$T/s3.jwt" --kind agent
expect_rc 0 nonce consume --file "$T/s3.jwt"
boto keys $BK clusters/one/cluster/nonce-used/ >"$T/keys"
[ "$(grep -c . "$T/keys")" = 1 ] || fail "one single-use marker in the bucket"
expect_rc 11 nonce consume --file "$T/s3.jwt"
# nonce prune on S3: an expired marker goes, the live one stays
boto put $BK "clusters/one/cluster/nonce-used/$(printf 'a%063d' 1)" '{"exp":1000,"used_at":900}'
expect_rc 0 nonce prune
assert_contains "$T/out" "removed 1 of 2 used-nonce markers (expired); kept 1" "prune on S3"
boto keys $BK clusters/one/cluster/nonce-used/ >"$T/keys"
[ "$(grep -c . "$T/keys")" = 1 ] || fail "the live marker stays after a prune"
expect_rc 11 nonce consume --file "$T/s3.jwt"

# ---- storage errors name the bucket and S3's code ----
sed "s/access_key_id: $S3_AK/access_key_id: NOBODY/" "$T/config.yaml" >"$T/c2" && mv "$T/c2" "$T/config.yaml"
expect_rc 6 get greeting
assert_contains "$T/err" "bucket '$BK'" "a refused request names the bucket"
assert_contains "$T/err" "HTTP 403 InvalidAccessKeyId" "a refused request names status and code"
if [ "$BACKEND" = rgw ]; then
    s3cfg "$KB"
    sed "s/secret_access_key: $S3_SK/secret_access_key: wrong-secret/" "$T/config.yaml" >"$T/c2" &&
        mv "$T/c2" "$T/config.yaml"
    expect_rc 6 get greeting
    assert_contains "$T/err" "HTTP 403 SignatureDoesNotMatch" "a wrong secret key: status and S3 code"
    assert_contains "$T/err" "bucket '$BK'" "a wrong secret key: the bucket"
fi
s3cfg "$KB"
sed "s/bucket: $BK/bucket: no-such-bucket/" "$T/config.yaml" >"$T/c2" && mv "$T/c2" "$T/config.yaml"
expect_rc 6 list
assert_contains "$T/err" "NoSuchBucket" "a missing bucket is named as such"
assert_contains "$T/err" "bucket 'no-such-bucket'" "a missing bucket is named"

# ---- credentials from the environment, another bucket, no prefix ----
{
    printf 'cluster_id: s3cli\nstorage:\n  backend: s3\n  bucket: %s\n' "$BK2"
    printf '  endpoint: %s/\n  path_style: true\n' "$S3_ENDPOINT"
    printf 'encryption_key: %s\n' "$KB"
} >"$T/config.yaml"
export AWS_ACCESS_KEY_ID=$S3_AK AWS_SECRET_ACCESS_KEY=$S3_SK AWS_EC2_METADATA_DISABLED=true
expect_rc 0 put envcreds <"$T/p-text"
expect_rc 0 get envcreds
cmp "$T/out" "$T/p-text" || fail "env credentials: content differs"
boto keys $BK2 "" >"$T/keys"
assert_eq "$(cat "$T/keys")" "cluster/secret/envcreds" "no prefix: the key is the object name"
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
expect_rc 2 get envcreds
assert_contains "$T/err" "aws credentials" "no credentials anywhere: a configuration error"
echo "PASS"
