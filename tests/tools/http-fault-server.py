#!/usr/bin/env python3
"""A small in-memory S3 (and EC2 instance metadata) on 127.0.0.1 for tests/integration/s3-faults.sh.

Unlike s3rver it checks what matters for our S3 backend:
  * every S3 request's SigV4 signature, recomputed with python3-botocore (S3SigV4Auth) from the request as
    received: a mismatch is answered 403 SignatureDoesNotMatch, and the request is logged as such;
  * conditional writes: PUT with If-None-Match: * on an existing key and If-Match with another ETag get
    412 PreconditionFailed, If-Match on a missing key 404 NoSuchKey;
  * ListObjectsV2 pagination (max-keys honoured, continuation-token), HEAD, DELETE (204 either way).
Buckets: any name, created on first use; path-style (/bucket/key) and virtual-hosted (Host bucket.localhost).

Faults are scripted through a control API (never signed): POST /__control/queue with a JSON list of entries
{"method": "PUT"?, "status": 503?, "body": "..."?, "headers": {...}?, "delay": seconds?}; the next S3 request
whose method matches takes the first matching entry: it waits `delay`, then answers `status`/`body` instead
of doing the operation (no status: it then does the operation normally). GET /__control/log returns one JSON
object per S3 request: method, path, host, signature ("ok" | "bad" | "none"), if_match, if_none_match,
status. POST /__control/reset clears queue, log and objects. POST /__control/etag-mode with "exact" (the
default: If-Match must equal the stored, quoted ETag), "bare" (as Ceph RGW before ceph/ceph PR 63348: the
header is compared with the ETag without its quotes, so the quoted form always fails) or "aws" (quotes
stripped on both sides, as AWS S3 does); reset does not change it.

IMDSv2: PUT /latest/api/token, GET /latest/meta-data/iam/security-credentials/[ROLE] (token required).

Usage: http-fault-server.py --port-file FILE   (binds 127.0.0.1 on a free port, writes the port to FILE)
"""
import argparse
import datetime
import hashlib
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock
from xml.sax.saxutils import escape

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

KEYS = {
    "AKIDFAULTSERVER1": ("fault-secret/with+chars", None),
    "ASIAIMDSROLE0001": ("imds-secret", "imds-session-token//+="),
}
IMDS_TOKEN = "imds-token-123"
IMDS_ROLE = "nstance-role"

lock = threading.Lock()
objects = {}  # (bucket, key) -> (bytes, etag)
queue = []
log = []
etag_mode = ["exact"]


def if_match_ok(header, etag):
    if etag_mode[0] == "bare":
        return header == etag.strip('"')
    if etag_mode[0] == "aws":
        return header.strip('"') == etag.strip('"')
    return header == etag


def check_signature(handler, body):
    auth = handler.headers.get("Authorization")
    if auth is None:
        return "none", None
    try:
        algo, rest = auth.split(" ", 1)
        parts = dict(p.strip().split("=", 1) for p in rest.split(","))
        akid, day, region, service, _ = parts["Credential"].split("/")
        signed = parts["SignedHeaders"].split(";")
        got = parts["Signature"]
    except (ValueError, KeyError):
        return "bad", None
    if algo != "AWS4-HMAC-SHA256" or akid not in KEYS:
        return "bad", None
    secret, token = KEYS[akid]
    if token is not None and handler.headers.get("X-Amz-Security-Token") != token:
        return "bad", None
    amz_date = handler.headers.get("X-Amz-Date", "")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return "bad", None
    host = handler.headers.get("Host")
    url = "http://" + host + handler.path
    own = {"authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "host"}
    headers = {h: handler.headers.get(h) for h in signed if h not in own}
    if any(v is None for v in headers.values()):
        return "bad", None
    req = AWSRequest(method=handler.command, url=url, headers=headers, data=body)
    signer = botocore.auth.S3SigV4Auth(Credentials(akid, secret, token), service, region)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        signer.add_auth(req)
    want = req.headers["Authorization"].rsplit("Signature=", 1)[1]
    want_signed = req.headers["Authorization"].split("SignedHeaders=", 1)[1].split(",", 1)[0]
    if want != got or want_signed != parts["SignedHeaders"]:
        return "bad", None
    if handler.headers.get("X-Amz-Content-Sha256") != hashlib.sha256(body).hexdigest():
        return "bad", None
    return "ok", akid


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def reply(self, status, body=b"", headers=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.status = status

    def error(self, status, code, message, resource=""):
        body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s</Message>"
                "<Resource>%s</Resource></Error>" % (code, escape(message), escape(resource)))
        self.reply(status, body, {"Content-Type": "application/xml"})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def handle_any(self):
        self.status = 0
        data = self.body()
        u = urllib.parse.urlsplit(self.path)
        if u.path.startswith("/__control/"):
            return self.control(u.path, data)
        if u.path.startswith("/latest/"):
            return self.imds(u.path)
        self.s3(u, data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    def control(self, path, data):
        global queue, log
        with lock:
            if path == "/__control/queue":
                queue.extend(json.loads(data))
                return self.reply(200, "queued")
            if path == "/__control/log":
                return self.reply(200, "".join(json.dumps(e) + "\n" for e in log))
            if path == "/__control/etag-mode":
                mode = data.decode()
                if mode not in ("exact", "bare", "aws"):
                    return self.reply(400, "bad mode")
                etag_mode[0] = mode
                return self.reply(200, mode)
            if path == "/__control/reset":
                queue, log = [], []
                objects.clear()
                return self.reply(200, "reset")
        self.reply(404, "no such control")

    def imds(self, path):
        if path == "/latest/api/token" and self.command == "PUT":
            if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return self.reply(400, "missing ttl")
            return self.reply(200, IMDS_TOKEN)
        if self.headers.get("X-aws-ec2-metadata-token") != IMDS_TOKEN:
            return self.reply(401, "")
        base = "/latest/meta-data/iam/security-credentials/"
        if path == base:
            return self.reply(200, IMDS_ROLE)
        if path == base + IMDS_ROLE:
            exp = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=6))
            secret, token = KEYS["ASIAIMDSROLE0001"]
            return self.reply(200, json.dumps({
                "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "ASIAIMDSROLE0001",
                "SecretAccessKey": secret, "Token": token, "Expiration": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}))
        self.reply(404, "")

    def s3(self, u, data):
        host = self.headers.get("Host", "")
        name = host.split(":")[0]
        if name.endswith(".localhost"):
            bucket, key = name[: -len(".localhost")], urllib.parse.unquote(u.path[1:])
        else:
            parts = u.path[1:].split("/", 1)
            bucket, key = urllib.parse.unquote(parts[0]), urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""
        sig, _ = check_signature(self, data)
        entry = {"method": self.command, "path": self.path, "host": host, "signature": sig,
                 "if_match": self.headers.get("If-Match"), "if_none_match": self.headers.get("If-None-Match")}
        fault = None
        with lock:
            for i, q in enumerate(queue):
                if q.get("method") in (None, self.command):
                    fault = queue.pop(i)
                    break
        try:
            if fault is not None and fault.get("delay"):
                time.sleep(float(fault["delay"]))
            if sig != "ok":
                return self.error(403, "SignatureDoesNotMatch",
                                  "The request signature we calculated does not match the signature you provided.")
            if fault is not None and "status" in fault:
                return self.reply(int(fault["status"]), fault.get("body", ""), fault.get("headers"))
            self.s3_op(bucket, key, u, data)
        except (BrokenPipeError, ConnectionResetError):
            self.status = -1
        finally:
            entry["status"] = self.status
            with lock:
                log.append(entry)

    def s3_op(self, bucket, key, u, data):
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        if key == "" and self.command == "GET" and q.get("list-type") == ["2"]:
            return self.list(bucket, q)
        k = (bucket, key)
        with lock:
            cur = objects.get(k)
            if self.command in ("GET", "HEAD"):
                if cur is None:
                    return self.error(404, "NoSuchKey", "The specified key does not exist.", key)
                return self.reply(200, cur[0], {"ETag": cur[1]})
            if self.command == "PUT":
                inm, im = self.headers.get("If-None-Match"), self.headers.get("If-Match")
                if inm == "*" and cur is not None:
                    return self.error(412, "PreconditionFailed", "At least one of the pre-conditions you "
                                      "specified did not hold", key)
                if im is not None:
                    if cur is None:
                        return self.error(404, "NoSuchKey", "The specified key does not exist.", key)
                    if not if_match_ok(im, cur[1]):
                        return self.error(412, "PreconditionFailed", "At least one of the pre-conditions you "
                                          "specified did not hold", key)
                etag = '"%s"' % hashlib.md5(data).hexdigest()
                objects[k] = (data, etag)
                return self.reply(200, b"", {"ETag": etag})
            if self.command == "DELETE":
                objects.pop(k, None)
                return self.reply(204)
        self.error(405, "MethodNotAllowed", "not here")

    def list(self, bucket, q):
        prefix = q.get("prefix", [""])[0]
        maxk = int(q.get("max-keys", ["1000"])[0])
        after = q.get("continuation-token", [""])[0]
        with lock:
            keys = sorted(k for (b, k) in objects if b == bucket and k.startswith(prefix) and k > after)
        page, more = keys[:maxk], len(keys) > maxk
        out = ['<?xml version="1.0" encoding="UTF-8"?>',
               '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
               "<Name>%s</Name><Prefix>%s</Prefix><KeyCount>%d</KeyCount><MaxKeys>%d</MaxKeys>"
               % (escape(bucket), escape(prefix), len(page), maxk),
               "<IsTruncated>%s</IsTruncated>" % ("true" if more else "false")]
        for k in page:
            out.append("<Contents><Key>%s</Key><Size>1</Size><ETag>&quot;x&quot;</ETag></Contents>" % escape(k))
        if more:
            out.append("<NextContinuationToken>%s</NextContinuationToken>" % escape(page[-1]))
        out.append("</ListBucketResult>")
        self.reply(200, "".join(out), {"Content-Type": "application/xml"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    args = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
