#!/usr/bin/env python3
"""Independent reference decoder for the nstance-secrets envelope, version 1 (doc/envelope.md).

Written from the documentation, not from the C code, with python3-cryptography, so that a test can check
that what the C code writes is what the document says.

  envelope-decode.py BLOB NAME                 print the header fields
  envelope-decode.py BLOB NAME --key KEYFILE   also decrypt (software KEK: 32 raw bytes / hex / base64)

The plaintext goes to stdout (binary); header fields to stderr. Exit 0 on success, 1 on any failure.
"""
import argparse
import base64
import hashlib
import hmac
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"NSEN"
MECHS = {1: "aes-gcm", 2: "aes-kwp", 3: "rsa-oaep", 4: "software-aes-gcm"}
ID_LABEL = b"nstance-secrets kek-id v1"


def fail(msg):
    print("envelope-decode: " + msg, file=sys.stderr)
    sys.exit(1)


def read_key(path):
    raw = open(path, "rb").read()
    if len(raw) == 32:
        return raw
    text = raw[:-1] if raw.endswith(b"\n") else raw
    text = text[:-1] if text.endswith(b"\r") else text
    if len(text) == 64:
        return bytes.fromhex(text.decode())
    if len(text) == 44:
        return base64.b64decode(text, validate=True)
    fail("key is not 32 raw bytes, 64 hex digits or 44 base64 characters")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("blob")
    ap.add_argument("name")
    ap.add_argument("--key")
    a = ap.parse_args()
    blob = open(a.blob, "rb").read()
    name = a.name.encode()

    if len(blob) < 8 or blob[:4] != MAGIC:
        fail("not an envelope (magic)")
    version, mech, param, flags = blob[4], blob[5], blob[6], blob[7]
    if version != 1:
        fail("unknown version %d" % version)
    if mech not in MECHS or flags != 0 or param > 2:
        fail("bad mechanism/param/flags")
    kek_id = blob[8:24]
    (wlen,) = struct.unpack(">H", blob[24:26])
    if not 1 <= wlen <= 1024:
        fail("wrapped length out of range")
    off = 26
    wrapped = blob[off:off + wlen]
    off += wlen
    hdr_nonce = blob[off:off + 12]
    off += 12
    hdr_auth = blob[:off]
    hdr_tag = blob[off:off + 16]
    off += 16
    header_len = off
    payload_nonce = blob[off:off + 12]
    off += 12
    ct_and_tag = blob[off:]
    if len(ct_and_tag) < 16 or len(hdr_tag) != 16 or len(payload_nonce) != 12:
        fail("truncated")

    print("version      %d" % version, file=sys.stderr)
    print("mechanism    %d (%s), param %d" % (mech, MECHS[mech], param), file=sys.stderr)
    print("kek id       %s" % kek_id.hex(), file=sys.stderr)
    print("wrapped DEK  %d bytes" % wlen, file=sys.stderr)
    print("header       %d bytes, payload %d bytes" % (header_len, len(ct_and_tag) - 16), file=sys.stderr)

    if a.key is None:
        return
    if mech != 4:
        fail("only software KEKs can be opened here")
    key = read_key(a.key)
    mac = hmac.new(key, ID_LABEL, hashlib.sha256).digest()
    want_id = hashlib.sha256(ID_LABEL + bytes([4]) + mac).digest()[:16]
    if want_id != kek_id:
        fail("the key's id %s is not the blob's" % want_id.hex())
    binding = MAGIC + bytes([1]) + struct.pack(">H", len(name)) + name
    wrap_aad = MAGIC + bytes([1, mech, 0]) + kek_id
    try:
        dek = AESGCM(key).decrypt(wrapped[:12], wrapped[12:], wrap_aad)
        AESGCM(dek).decrypt(hdr_nonce, hdr_tag, hdr_auth + binding)
        pt = AESGCM(dek).decrypt(payload_nonce, ct_and_tag, binding)
    except InvalidTag:
        fail("integrity check failed")
    sys.stdout.buffer.write(pt)


if __name__ == "__main__":
    main()
