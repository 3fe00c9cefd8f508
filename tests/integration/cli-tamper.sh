#!/usr/bin/env bash
# Covers: flipped, truncated, extended, renamed and spliced blobs (token and file KEK) exit 8 or 4 exactly, never 0.
#
# In detail: single-bit flips at every one of the first 120 bytes of the stored file (all 8 bits of each fixed
# header field, two bits of every other byte); bit flips in the payload ciphertext and tag; truncation at 0,
# 1, 10, 50, len-1, len-17 bytes; one and many appended bytes; a blob larger than the format allows; cp of a
# blob under another name (4); a header spliced onto another blob's payload (4); an unknown version byte at
# offset 4 (8, "unknown format version"); after each damage the original is restored and reads again; verify
# over a bucket with one tampered blob names exactly that blob and exits 4. The expected code per case comes
# from an independent parse of the documented layout (src/envelope/envelope.h): 8 if the header cannot be
# parsed, 4 if it can.
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ns_setup

ns_token tam 2718-tamper
BUCKET=$T/bucket
SECRETS=$BUCKET/cluster/secret
URI="pkcs11:token=tam;object=kek-tamper?module-path=$SOFTHSM_MODULE&pin-source=file:$T/pin-tam"
(
    umask 077
    head -c 32 /dev/urandom >"$T/file.key"
)
KTOK="{source: pkcs11, uri: \"$URI\", mechanism: aes-gcm}"
KFILE="{source: file, path: $T/file.key}"

expect_rc 0 kek generate --uri "$URI" --mechanism aes-gcm
# blobs under the file KEK: write them with the file key as primary
ns_config <<EOF
cluster_id: tamper
storage: {backend: file, path: $BUCKET}
encryption_key: $KFILE
EOF
head -c 40 /dev/urandom >"$T/plain-file"
expect_rc 0 put file/a "$T/plain-file"
expect_rc 0 put file/other "$T/plain-file"
# blobs under the token KEK, and the config used from here on: token primary, file old
ns_config <<EOF
cluster_id: tamper
storage: {backend: file, path: $BUCKET}
encryption_key: $KTOK
old_encryption_keys:
  - $KFILE
EOF
head -c 40 /dev/urandom >"$T/plain-tok"
expect_rc 0 put tok/a "$T/plain-tok"
expect_rc 0 put tok/other "$T/plain-tok"
for i in 1 2 3 4 5; do
    expect_rc 0 put "good/$i" "$T/plain-tok"
done
expect_rc 0 verify
assert_contains "$T/out" "verified 9 blobs: 9 ok, 0 failed" "verify before tampering"
[ "$(od -An -tu1 -j5 -N1 "$SECRETS/tok/a" | tr -d ' ')" = 1 ] || fail "tok/a is not an aes-gcm blob"
[ "$(od -An -tu1 -j5 -N1 "$SECRETS/file/a" | tr -d ' ')" = 4 ] || fail "file/a is not a software-key blob"

# The driver: applies each damage to the stored file, runs `get`, restores the file, and records every case
# whose exit code is not the expected one (or that printed anything on stdout).
cat >"$T/tamper.py" <<'PY'
import os, subprocess, sys

cli, config, secrets, name, plain_path, report = sys.argv[1:7]
path = os.path.join(secrets, name)
orig = open(path, "rb").read()
plain = open(plain_path, "rb").read()
PLAINTEXT_MAX = 1 << 20
BLOB_MAX = PLAINTEXT_MAX + 2048
WRAPPED_MAX = 1024


def header_ok(b):
    """The documented layout: magic "NSEN" | version 1 | mech 1..4 | param | flags 0 | kek id (16) |
    u16 W (1..1024) | wrapped (W) | header nonce (12) | header tag (16) | payload nonce (12) | ciphertext |
    payload tag (16); param is the OAEP hash (1 sha1, 2 sha256) for rsa-oaep (mech 3) and 0 otherwise.
    False if it cannot be parsed (exit 8 expected), True if it can (exit 4)."""
    if len(b) > BLOB_MAX or len(b) < 26 or b[:4] != b"NSEN" or b[4] != 1:
        return False
    mech, param, flags = b[5], b[6], b[7]
    w = int.from_bytes(b[24:26], "big")
    if not 1 <= w <= WRAPPED_MAX:
        return False
    if len(b) < 26 + w + 12 + 16 + 12 + 16:
        return False
    if not 1 <= mech <= 4 or flags != 0:
        return False
    if param not in ((1, 2) if mech == 3 else (0,)):
        return False
    return len(b) - (26 + w + 12 + 16 + 12 + 16) <= PLAINTEXT_MAX


def expected(b):
    return 4 if header_ok(b) else 8


failures = []
counts = {}


def case(label, data, want=None):
    if want is None:
        want = expected(data)
    with open(path, "wb") as f:
        f.write(data)
    p = subprocess.run([cli, "-c", config, "get", name], capture_output=True)
    counts[p.returncode] = counts.get(p.returncode, 0) + 1
    problem = None
    if p.returncode == 0:
        problem = "exit 0 (accepted damaged data)"
    elif p.returncode != want:
        problem = "exit %d, expected %d" % (p.returncode, want)
    elif p.stdout:
        problem = "printed %d bytes on stdout" % len(p.stdout)
    elif plain in p.stderr:
        problem = "plaintext on stderr"
    if problem:
        failures.append("%s %s: %s; stderr: %s" % (name, label, problem, p.stderr.decode(errors="replace").strip()))
    return p


# 1. a bit flip at every one of the first 120 bytes: all 8 bits of the fixed-position header fields (magic,
# version, mech, param, flags, KEK id, wrapped length: bytes 0..25), two bits of every later byte
for off in range(min(120, len(orig))):
    for bit in (range(8) if off < 26 else sorted({off % 8, (off + 4) % 8})):
        b = bytearray(orig)
        b[off] ^= 1 << bit
        case("flip offset %d bit %d" % (off, bit), bytes(b))

# 2. payload ciphertext and tag
w = int.from_bytes(orig[24:26], "big")
payload_at = 26 + w + 12 + 16 + 12
for off in sorted({payload_at, payload_at + 7, len(orig) - 17, len(orig) - 16, len(orig) - 9, len(orig) - 1}):
    for bit in (0, 7):
        b = bytearray(orig)
        b[off] ^= 1 << bit
        case("payload flip offset %d bit %d" % (off, bit), bytes(b), 4)

# 3. truncation
for n in sorted({0, 1, 10, 50, len(orig) - 1, len(orig) - 17}):
    case("truncated to %d bytes" % n, orig[:n])

# 4. appended bytes
case("one byte appended", orig + b"\x00", 4)
case("one byte 0xff appended", orig + b"\xff", 4)
case("16 bytes appended", orig + bytes(16), 4)
case("grown past the blob limit", orig + bytes(BLOB_MAX), 8)

# 5. unknown version byte
for v in (0, 2, 255):
    b = bytearray(orig)
    b[4] = v
    p = case("version byte %d" % v, bytes(b), 8)
    if b"unknown format version" not in p.stderr:
        failures.append("%s version byte %d: stderr lacks 'unknown format version': %s"
                        % (name, v, p.stderr.decode(errors="replace").strip()))

# restore
with open(path, "wb") as f:
    f.write(orig)
p = subprocess.run([cli, "-c", config, "get", name], capture_output=True)
if p.returncode != 0 or p.stdout != plain:
    failures.append("%s: the restored blob does not read back (exit %d)" % (name, p.returncode))

with open(report, "a") as f:
    for line in failures:
        f.write(line + "\n")
print("# %s: %d cases, exit codes %s, %d wrong"
      % (name, sum(counts.values()), dict(sorted(counts.items())), len(failures)))
PY

: >"$T/report"
for name in tok/a file/a; do
    plain=$T/plain-tok
    [ "$name" = file/a ] && plain=$T/plain-file
    python3 "$T/tamper.py" "$NS_CLI" "$T/config.yaml" "$SECRETS" "$name" "$plain" "$T/report" ||
        fail "the tamper driver failed for $name"
done
if [ -s "$T/report" ]; then
    echo "--- cases with a wrong result ($(wc -l <"$T/report")) ---" >&2
    head -n 60 "$T/report" >&2
    fail "tampered blobs: some cases did not exit with the expected code (see above)"
fi

# ---- both originals read again ----
expect_rc 0 get tok/a
cmp "$T/out" "$T/plain-tok" || fail "tok/a after the tamper run"
expect_rc 0 get file/a
cmp "$T/out" "$T/plain-file" || fail "file/a after the tamper run"

# ---- a blob copied under another name ----
for kind in tok file; do
    cp "$SECRETS/$kind/a" "$SECRETS/$kind/b"
    expect_rc 4 get "$kind/b"
    [ ! -s "$T/out" ] || fail "get of a renamed $kind blob printed something"
    assert_contains "$T/err" "integrity" "renamed $kind blob: integrity error"
    mkdir -p "$SECRETS/moved/$kind"
    cp "$SECRETS/$kind/a" "$SECRETS/moved/$kind/a"
    expect_rc 4 get "moved/$kind/a"
    rm -f "$SECRETS/$kind/b"
    rm -rf "$SECRETS/moved"
done

# ---- the header of one blob spliced onto the payload of another ----
python3 - "$SECRETS" <<'PY'
import sys
s = sys.argv[1]
def split(b):
    w = int.from_bytes(b[24:26], "big")
    h = 26 + w + 12 + 16
    return b[:h], b[h:]
a_h, a_p = split(open(s + "/tok/a", "rb").read())
o_h, o_p = split(open(s + "/tok/other", "rb").read())
f_h, f_p = split(open(s + "/file/a", "rb").read())
open(s + "/tok/other", "wb").write(a_h + o_p)   # header of tok/a, payload of tok/other
open(s + "/file/a", "wb").write(a_h + f_p)      # token header on a file-key payload
PY
expect_rc 4 get tok/other
expect_rc 4 get file/a
[ ! -s "$T/out" ] || fail "a spliced blob printed something"

# ---- verify over a bucket with exactly one tampered blob ----
expect_rc 0 put tok/other "$T/plain-tok"
ns_config "$T/file-primary.yaml" <<EOF
cluster_id: tamper
storage: {backend: file, path: $BUCKET}
encryption_key: $KFILE
EOF
"$NS_CLI" -c "$T/file-primary.yaml" put file/a "$T/plain-file" || fail "re-put file/a"
expect_rc 0 verify
assert_contains "$T/out" "verified 9 blobs: 9 ok, 0 failed" "verify after restoring"
python3 - "$SECRETS/good/3" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[-5] ^= 0x10
open(p, "wb").write(bytes(b))
PY
expect_rc 4 verify
assert_contains "$T/out" "verified 9 blobs: 8 ok, 1 failed" "verify summary with one tampered blob"
assert_contains "$T/err" "FAIL cluster/secret/good/3: " "verify names the tampered blob"
assert_eq "$(grep -c '^FAIL ' "$T/err")" 1 "verify names exactly one blob"
for n in good/1 good/2 good/4 good/5 tok/a tok/other file/a file/other; do
    assert_not_contains "$T/err" "cluster/secret/$n:" "verify does not blame $n"
done
expect_rc 4 get good/3
expect_rc 0 get good/4
cmp "$T/out" "$T/plain-tok" || fail "good/4 after tampering good/3"
echo "# PASS cli-tamper"
