#!/usr/bin/env python3
"""A stand-in for the external key stores, for tests/integration/kek-sources.sh.

One HTTP server on 127.0.0.1 (a free port, or TLS with --tls-cert/--tls-key) that speaks just enough of:

  vault                  GET  /v1/<mount>/data/<path>            X-Vault-Token, X-Vault-Namespace
                         POST /v1/auth/<mount>/login             AppRole {role_id, secret_id}
                         POST /v1/auth/token/revoke-self
  aws-secrets-manager    POST /  X-Amz-Target: secretsmanager.GetSecretValue  (SigV4 checked with botocore)
  aws-parameter-store    POST /  X-Amz-Target: AmazonSSM.GetParameter         (SigV4 checked with botocore)
  google-secret-manager  GET  /computeMetadata/v1/instance/service-accounts/default/token  (Metadata-Flavor)
                         POST /token   JWT bearer grant: the RS256 assertion is verified with the
                                       service-account key the test generated (python3-cryptography)
                         GET  /v1/projects/P/secrets/S/versions/V:access
  azure-key-vault        GET  /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...  (Metadata)
                         POST /<tenant>/oauth2/v2.0/token        client credentials
                         GET  /secrets/<name>[/<version>]?api-version=7.4

It checks every documented part of each request (method, path, query, headers, credentials, body); a
request that breaks a rule is answered 400 "kek-source-server: ..." and the rule is appended to
STATE/violations.log, which the test asserts to be empty. Every request is logged to STATE/requests.log as
"METHOD PATH STATUS" (no query, no secrets), so tests can count attempts.

What it serves is read from STATE/config.json at every request (the test rewrites it between steps):

  {"vault":  {"token": T, "namespace": N|null, "secrets": {"<mount>/<path>": {field: value}},
              "approle": {"mount": "approle", "role_id": R, "secret_id": S, "token": T2}},
   "aws":    {"access_key": A, "secret_key": K, "region": R,
              "sm":  {"<SecretId>": {"SecretString": s} | {"SecretBinary": b64}, ...},
              "sm_stage": {"<SecretId>": "AWSPREVIOUS"},          (the VersionStage that must be sent)
              "ssm": {"<Name>": {"Type": "SecureString", "Value": v}}},
   "gcp":    {"metadata_token": T, "sa_key_file": PATH, "sa_token": T2,
              "secrets": {"projects/P/secrets/S/versions/V": b64}},
   "azure":  {"imds_token": T, "tenant": TN, "client_id": C, "client_secret": CS, "cc_token": T2,
              "secrets": {"<name>" or "<name>/<version>": value}},
   "faults": [{"match": "<path prefix>", "count": N (-1: always), "status": S, "body": "...",
               "sleep": seconds}]}

A fault answers the first `count` requests whose path starts with `match` (after `sleep`, with `status`
and `body` if given, else as usual); counters restart whenever config.json changes.

Subcommand `gen-gcp-key OUT.json TOKEN_URI`: write a service-account key file (RSA-2048, mode 0600).
"""
import base64
import datetime
import hashlib
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = None
LOCK = threading.Lock()
FAULT_COUNTERS = {}
CONFIG_STAMP = None


class Reject(Exception):
    """A rule of the documented request was broken."""


class Answer(Exception):
    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status = status
        self.body = body if isinstance(body, (bytes, str)) else json.dumps(body)
        self.headers = headers or {}


def load_config():
    global CONFIG_STAMP
    path = os.path.join(STATE, "config.json")
    st = os.stat(path)
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    with open(path) as f:
        cfg = json.load(f)
    with LOCK:
        if stamp != CONFIG_STAMP:
            CONFIG_STAMP = stamp
            FAULT_COUNTERS.clear()
    return cfg


def append(name, line):
    with LOCK, open(os.path.join(STATE, name), "a") as f:
        f.write(line + "\n")


def need(cond, rule):
    if not cond:
        raise Reject(rule)


def bearer(h):
    v = h.get("Authorization", "")
    return v[len("Bearer "):] if v.startswith("Bearer ") else None


def json_body(body):
    try:
        return json.loads(body)
    except ValueError:
        raise Reject("request body is not JSON")


def form_body(h, body):
    need(h.get("Content-Type", "").split(";")[0].strip() == "application/x-www-form-urlencoded",
         "Content-Type must be application/x-www-form-urlencoded")
    pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
    names = [k for k, _ in pairs]
    need(len(names) == len(set(names)), "form field given twice")
    return dict(pairs)


# ---- vault ----

def vault(cfg, method, path, query, h, body):
    v = cfg["vault"]
    ns = v.get("namespace")
    need(h.get("X-Vault-Namespace") == ns, "X-Vault-Namespace must be %r" % (ns,))
    need(not query, "no query expected")
    ar = v.get("approle") or {}
    if method == "POST" and path == "/v1/auth/token/revoke-self":
        need(h.get("X-Vault-Token") == ar.get("token"), "revoke-self with the AppRole token")
        with LOCK:
            v_revoked.add(ar.get("token"))
        raise Answer(204, b"")
    if method == "POST" and path.startswith("/v1/auth/") and path.endswith("/login"):
        need(path == "/v1/auth/%s/login" % ar.get("mount", "approle"), "AppRole login path")
        need(h.get("X-Vault-Token") is None, "no token on login")
        need(h.get("Content-Type", "").startswith("application/json"), "login Content-Type application/json")
        req = json_body(body)
        need(set(req) == {"role_id", "secret_id"}, "login body has exactly role_id and secret_id")
        if req["role_id"] != ar.get("role_id") or req["secret_id"] != ar.get("secret_id"):
            raise Answer(400, {"errors": ["invalid role or secret ID"]})
        with LOCK:
            v_revoked.discard(ar.get("token"))
        raise Answer(200, {"auth": {"client_token": ar["token"], "lease_duration": 60, "renewable": True}})
    need(method == "GET", "vault reads are GET")
    need(path.startswith("/v1/") and "/data/" in path, "KV v2 path /v1/<mount>/data/<path>")
    token = h.get("X-Vault-Token")
    valid = {v.get("token"), ar.get("token")} - {None}
    with LOCK:
        revoked = token in v_revoked
    if token not in valid or revoked:
        raise Answer(403, {"errors": ["permission denied"]})
    mount, _, kv = path[len("/v1/"):].partition("/data/")
    secret = v.get("secrets", {}).get(mount + "/" + kv)
    if secret is None:
        raise Answer(404, {"errors": []})
    raise Answer(200, {"request_id": "r", "lease_duration": 0, "renewable": False,
                       "data": {"data": secret, "metadata": {"version": 3, "destroyed": False}}})


v_revoked = set()


# ---- aws ----

def aws_check_sigv4(a, method, path, h, body, service):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = h.get("Authorization", "")
    need(auth.startswith("AWS4-HMAC-SHA256 "), "Authorization AWS4-HMAC-SHA256")
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    need(set(parts) == {"Credential", "SignedHeaders", "Signature"}, "Authorization has 3 parts")
    amz_date = h.get("X-Amz-Date", "")
    need(len(amz_date) == 16 and amz_date.endswith("Z"), "X-Amz-Date yyyymmddThhmmssZ")
    when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    need(abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) < 900, "X-Amz-Date is now")
    key_id, date, region, svc, term = parts["Credential"].split("/")
    need(date == amz_date[:8] and svc == service and term == "aws4_request", "credential scope")
    need(region == a["region"], "region %s in the credential scope" % a["region"])
    signed = parts["SignedHeaders"].split(";")
    for must in ("host", "x-amz-date", "x-amz-target", "content-type"):
        need(must in signed, "%s is signed" % must)
    if key_id != a["access_key"]:
        raise Answer(400, {"__type": "UnrecognizedClientException",
                           "message": "The security token included in the request is invalid."})
    headers = {}
    for name in signed:
        values = h.get_all(name) or []
        need(len(values) == 1, "signed header %s present once" % name)
        headers[name] = values[0]
    req = AWSRequest(method=method, url="http://" + h["Host"] + path, data=body, headers=headers)
    req.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(a["access_key"], a["secret_key"]), service, region)
    want = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    if want != parts["Signature"]:
        raise Answer(400, {"__type": "InvalidSignatureException",
                           "message": "The request signature we calculated does not match."})
    append("sigv4.log", "ok %s %s" % (service, parts["SignedHeaders"]))


def aws(cfg, method, path, query, h, body):
    a = cfg["aws"]
    need(method == "POST" and path == "/" and not query, "POST / without query")
    need(h.get("Content-Type") == "application/x-amz-json-1.1", "Content-Type application/x-amz-json-1.1")
    target = h.get("X-Amz-Target")
    if target == "secretsmanager.GetSecretValue":
        aws_check_sigv4(a, method, path, h, body, "secretsmanager")
        req = json_body(body)
        need(set(req) <= {"SecretId", "VersionStage"} and "SecretId" in req, "GetSecretValue body")
        sid = req["SecretId"]
        stage = a.get("sm_stage", {}).get(sid)
        need(req.get("VersionStage") == stage, "VersionStage must be %r" % (stage,))
        sec = a.get("sm", {}).get(sid)
        if sec is None:
            raise Answer(400, {"__type": "ResourceNotFoundException",
                               "message": "Secrets Manager can't find the specified secret."})
        out = {"ARN": "arn:aws:secretsmanager:%s:123456789012:secret:%s-AbCdEf" % (a["region"], sid),
               "Name": sid, "VersionId": "v1", "VersionStages": [stage or "AWSCURRENT"], "CreatedDate": 1.7e9}
        out.update(sec)
        raise Answer(200, out)
    if target == "AmazonSSM.GetParameter":
        aws_check_sigv4(a, method, path, h, body, "ssm")
        req = json_body(body)
        need(req.get("WithDecryption") is True, "WithDecryption is true")
        need(set(req) == {"Name", "WithDecryption"}, "GetParameter body")
        p = a.get("ssm", {}).get(req["Name"])
        if p is None:
            raise Answer(400, {"__type": "ParameterNotFound", "message": ""})
        out = {"Name": req["Name"], "Version": 1, "DataType": "text"}
        out.update(p)
        raise Answer(200, {"Parameter": out})
    raise Reject("unknown X-Amz-Target %r" % (target,))


# ---- google ----

def b64url_decode(s):
    need(all(c.isalnum() or c in "-_" for c in s), "JWT segment is base64url without padding")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def gcp_check_assertion(g, token_uri, assertion):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    with open(g["sa_key_file"]) as f:
        sa = json.load(f)
    segs = assertion.split(".")
    need(len(segs) == 3, "the assertion is a JWS compact serialization")
    header, claims = json.loads(b64url_decode(segs[0])), json.loads(b64url_decode(segs[1]))
    need(header.get("alg") == "RS256" and header.get("typ") == "JWT", "JWT header alg RS256 typ JWT")
    need(header.get("kid") == sa["private_key_id"], "JWT header kid is the key id")
    key = serialization.load_pem_private_key(sa["private_key"].encode(), None).public_key()
    try:
        key.verify(b64url_decode(segs[2]), (segs[0] + "." + segs[1]).encode(), padding.PKCS1v15(),
                   hashes.SHA256())
    except Exception:
        raise Answer(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    now = time.time()
    need(claims.get("iss") == sa["client_email"], "iss is the client_email")
    need(claims.get("aud") == token_uri, "aud is the token_uri")
    need(claims.get("scope") == "https://www.googleapis.com/auth/cloud-platform", "scope cloud-platform")
    need(abs(claims.get("iat", 0) - now) < 300, "iat is now")
    need(0 < claims.get("exp", 0) - claims["iat"] <= 3600, "exp within an hour of iat")
    append("jwt.log", "ok kid=%s" % header["kid"])


def gcp(cfg, method, path, query, h, body):
    g = cfg["gcp"]
    if path == "/computeMetadata/v1/instance/service-accounts/default/token":
        need(method == "GET" and not query, "metadata token: GET without query")
        if h.get("Metadata-Flavor") != "Google":
            raise Answer(403, "Missing Metadata-Flavor:Google header.", {"Metadata-Flavor": "Google"})
        raise Answer(200, {"access_token": g["metadata_token"], "expires_in": 3599, "token_type": "Bearer"},
                     {"Metadata-Flavor": "Google"})
    if path == "/token":
        need(method == "POST", "token: POST")
        f = form_body(h, body)
        need(set(f) == {"grant_type", "assertion"}, "token form has grant_type and assertion")
        need(f["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer", "grant_type jwt-bearer")
        token_uri = "%s://%s/token" % (SCHEME, h["Host"])
        gcp_check_assertion(g, token_uri, f["assertion"])
        raise Answer(200, {"access_token": g["sa_token"], "expires_in": 3599, "token_type": "Bearer"})
    need(method == "GET" and not query, "access: GET without query")
    need(path.endswith(":access"), "access path ends with :access")
    tok = bearer(h)
    if tok is None or tok not in (g.get("metadata_token"), g.get("sa_token")):
        raise Answer(403 if tok else 401, {"error": {"code": 403, "message": "Permission denied.",
                                                     "status": "PERMISSION_DENIED"}})
    name = path[len("/v1/"):-len(":access")]
    data = g.get("secrets", {}).get(name)
    if data is None:
        raise Answer(404, {"error": {"code": 404, "message": "Secret Version [%s] not found." % name,
                                     "status": "NOT_FOUND"}})
    raise Answer(200, {"name": name, "payload": {"data": data}})


# ---- azure ----

def azure(cfg, method, path, query, h, body):
    z = cfg["azure"]
    q = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    if path == "/metadata/identity/oauth2/token":
        need(method == "GET", "IMDS: GET")
        need(q == {"api-version": ["2018-02-01"], "resource": ["https://vault.azure.net"]},
             "IMDS query api-version=2018-02-01&resource=https://vault.azure.net")
        if h.get("Metadata") != "true":
            raise Answer(400, {"error": "invalid_request", "error_description": "Required metadata header"})
        raise Answer(200, {"access_token": z["imds_token"], "expires_in": "3599", "token_type": "Bearer",
                           "resource": "https://vault.azure.net"})
    if path.endswith("/oauth2/v2.0/token"):
        need(method == "POST" and not query, "client credentials: POST without query")
        need(path == "/%s/oauth2/v2.0/token" % z["tenant"], "token path names the tenant")
        f = form_body(h, body)
        need(set(f) == {"grant_type", "client_id", "client_secret", "scope"}, "client credentials form")
        need(f["grant_type"] == "client_credentials", "grant_type client_credentials")
        need(f["scope"] == "https://vault.azure.net/.default", "scope https://vault.azure.net/.default")
        if f["client_id"] != z["client_id"] or f["client_secret"] != z["client_secret"]:
            raise Answer(401, {"error": "invalid_client",
                               "error_description": "AADSTS7000215: Invalid client secret provided."})
        raise Answer(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": z["cc_token"]})
    need(method == "GET", "secret: GET")
    need(path.startswith("/secrets/"), "secret path /secrets/<name>[/<version>]")
    need(q == {"api-version": ["7.4"]}, "query api-version=7.4")
    tok = bearer(h)
    if tok is None:
        raise Answer(401, {"error": {"code": "Unauthorized", "message": "AKV10000: missing token"}})
    if tok not in (z.get("imds_token"), z.get("cc_token")):
        raise Answer(403, {"error": {"code": "Forbidden", "message": "Access denied"}})
    key = path[len("/secrets/"):]
    val = z.get("secrets", {}).get(key)
    if val is None:
        raise Answer(404, {"error": {"code": "SecretNotFound", "message": "A secret with (name/id) %s was not "
                                     "found in this key vault." % key}})
    raise Answer(200, {"value": val, "id": "%s://%s/secrets/%s" % (SCHEME, h["Host"], key),
                       "attributes": {"enabled": True}})


def route(cfg, method, path, query, h, body):
    if h.get("X-Amz-Target") is not None:
        return aws(cfg, method, path, query, h, body)
    if path.startswith("/v1/projects/") or path in ("/token", "/computeMetadata/v1/instance/service-accounts/"
                                                              "default/token"):
        return gcp(cfg, method, path, query, h, body)
    if path.startswith("/v1/"):
        return vault(cfg, method, path, query, h, body)
    if path.startswith("/secrets/") or path.startswith("/metadata/identity/") or path.endswith("/oauth2/v2.0/token"):
        return azure(cfg, method, path, query, h, body)
    raise Answer(404, "no such route")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def handle_any(self):
        path, _, query = self.path.partition("?")
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        status, out, extra = 500, b"", {}
        try:
            cfg = load_config()
            fault = self.fault(cfg, path)
            if fault is not None:
                if fault.get("sleep"):
                    time.sleep(fault["sleep"])
                if "status" in fault:
                    raise Answer(fault["status"], fault.get("body", ""))
            route(cfg, self.command, path, query, self.headers, body)
        except Answer as a:
            status, out, extra = a.status, a.body, a.headers
        except Reject as e:
            append("violations.log", "%s %s: %s" % (self.command, path, e))
            status, out = 400, "kek-source-server: %s" % e
        except Exception as e:  # a bug in this server must fail the test too
            append("violations.log", "%s %s: server error %r" % (self.command, path, e))
            status, out = 500, "kek-source-server: internal error"
        if isinstance(out, str):
            out = out.encode()
        append("requests.log", "%s %s %d" % (self.command, path, status))
        try:
            self.send_response(status)
            ctype = "application/json" if out[:1] in (b"{", b"[") else "text/plain"
            self.send_header("Content-Type", ctype)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(out)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def fault(self, cfg, path):
        for i, f in enumerate(cfg.get("faults", [])):
            if not path.startswith(f["match"]):
                continue
            with LOCK:
                used = FAULT_COUNTERS.get(i, 0)
                if f.get("count", 1) >= 0 and used >= f.get("count", 1):
                    continue
                FAULT_COUNTERS[i] = used + 1
            return f
        return None

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


def gen_gcp_key(out, token_uri):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    doc = {"type": "service_account", "project_id": "test-project",
           "private_key_id": hashlib.sha1(pem.encode()).hexdigest(), "private_key": pem,
           "client_email": "nstance@test-project.iam.gserviceaccount.com", "client_id": "1",
           "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri}
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)


SCHEME = "http"


def main():
    global STATE, SCHEME
    args = sys.argv[1:]
    if args[:1] == ["gen-gcp-key"] and len(args) == 3:
        gen_gcp_key(args[1], args[2])
        return
    opts = dict(zip(args[::2], args[1::2]))
    if len(args) % 2 or "--state" not in opts or set(opts) - {"--state", "--tls-cert", "--tls-key"}:
        sys.exit("usage: kek-source-server.py --state DIR [--tls-cert PEM --tls-key PEM] | gen-gcp-key OUT URI")
    STATE = opts["--state"]
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    if "--tls-cert" in opts:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(opts["--tls-cert"], opts["--tls-key"])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        SCHEME = "https"
    # The port, written last and atomically: the test waits for this file.
    tmp = os.path.join(STATE, "port.tmp")
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, os.path.join(STATE, "port"))
    srv.serve_forever()


if __name__ == "__main__":
    main()
