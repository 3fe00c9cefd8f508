#!/usr/bin/env python3
"""Helpers for the server tests (tests/integration/server-*.sh).

  srvclient.py regbody NONCE PUBPEM [HOSTNAME IPV4 IPV6]   a /v1/register body on stdout
  srvclient.py field JSONFILE MEMBER                       a string member of a JSON object
  srvclient.py certcheck CERT CA_BUNDLE CN O ROLE ROLE_OID [DNS] [IP]  check an issued certificate
  srvclient.py files JSONFILE OUTDIR                       check a files answer; write each file's content
  srvclient.py servercert PORT CA_BUNDLE NAME...           check the server's TLS certificate
  srvclient.py mkcert OUTKEY OUTCRT CN O[,O2] ROLE OID NB NA [CA_CERT CA_KEY]
      a client certificate (Ed25519 key) valid from now+NB to now+NA seconds, issued by CA_KEY (PEM) or, without
      it, by a fresh self-signed CA of its own (another CA); ROLE "-" leaves the role extension out
  srvclient.py load PORT CA_BUNDLE CERT KEY OUTLOG STOPFILE
      continuous load until STOPFILE exists: GET /v1/agent/files, POST /v1/agent/renew (the CA key signs)
      and GET /health with the client certificate CERT/KEY, one request after the other, a new connection
      whenever one fails; one line per request in OUTLOG: "UNIXTIME ENDPOINT STATUS" (STATUS "conn" when
      no answer came, "nocert" for a 200 renew without a certificate, "noerror" for a non-200 without a
      JSON error code)
  srvclient.py renewloop PORT CA_BUNDLE CERT KEY N ENDPOINT
      N renewals (POST ENDPOINT, body {}) one after the other on ONE keep-alive connection with CERT/KEY; prints
      "STATUS COUNT" per status; exits 1 if a 429 lacks a Retry-After of 1..86400 s or the JSON error
      rate_limited, or a 200 lacks a certificate
"""
import base64, datetime, hashlib, json, os, socket, ssl, sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def die(msg):
    sys.stderr.write("srvclient.py: " + msg + "\n")
    sys.exit(1)


def load_bundle(path):
    return x509.load_pem_x509_certificates(open(path, "rb").read())


def verify_by(cert, bundle):
    for ca in bundle:
        try:
            cert.verify_directly_issued_by(ca)
            return ca
        except Exception:
            pass
    die("certificate not issued by any CA of the bundle")


def load(port, bundle, cert, key, outlog, stopfile):
    import http.client, time
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(bundle)
    ctx.check_hostname = False
    ctx.load_cert_chain(cert, key)
    out = open(outlog, "a", buffering=1)
    conn = None
    reqs = [("GET", "/v1/agent/files", None, "files"), ("POST", "/v1/agent/renew", b"{}", "renew"),
            ("GET", "/health", None, "health")]
    i = 0
    while not os.path.exists(stopfile):
        method, path, body, name = reqs[i % len(reqs)]
        i += 1
        status = "conn"
        try:
            if conn is None:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            status = str(resp.status)
            if name != "health":
                doc = json.loads(data)
                if resp.status == 200 and name == "renew" and "BEGIN CERTIFICATE" not in doc.get("certificate", ""):
                    status = "nocert"
                elif resp.status != 200 and not isinstance(doc.get("error"), str):
                    status = "noerror"
        except Exception:
            if conn is not None:
                conn.close()
            conn = None
        out.write("%.3f %s %s\n" % (time.time(), name, status))
        time.sleep(0.01)


def renewloop(port, bundle, cert, key, n, endpoint):
    import http.client
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(bundle)
    ctx.check_hostname = False
    ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    counts = {}
    for _ in range(n):
        conn.request("POST", endpoint, body=b"{}", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.will_close:
            die("the server closed the keep-alive connection")
        counts[resp.status] = counts.get(resp.status, 0) + 1
        if resp.status == 429:
            ra = resp.getheader("Retry-After", "")
            if not ra.isdigit() or not 1 <= int(ra) <= 86400:
                die("429 with Retry-After %r" % ra)
            if json.loads(data).get("error") != "rate_limited":
                die("429 with body %r" % data)
        elif resp.status == 200 and "BEGIN CERTIFICATE" not in json.loads(data).get("certificate", ""):
            die("200 without a certificate")
    conn.close()
    for k in sorted(counts):
        print("%d %d" % (k, counts[k]))


def main():
    cmd = sys.argv[1]
    if cmd == "regbody":
        body = {"nonce": sys.argv[2], "public_key": open(sys.argv[3]).read()}
        for i, k in enumerate(["hostname", "ipv4", "ipv6"]):
            if len(sys.argv) > 4 + i and sys.argv[4 + i]:
                body[k] = sys.argv[4 + i]
        print(json.dumps(body))
    elif cmd == "field":
        v = json.load(open(sys.argv[2]))[sys.argv[3]]
        sys.stdout.write(v if isinstance(v, str) else json.dumps(v))
    elif cmd == "certcheck":
        cert = x509.load_pem_x509_certificate(open(sys.argv[2], "rb").read())
        bundle = load_bundle(sys.argv[3])
        verify_by(cert, bundle)
        cn, o, role, oid = sys.argv[4:8]
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        os_ = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if [a.value for a in cns] != [cn] or [a.value for a in os_] != [o]:
            die("subject %s, want CN=%s O=%s" % (cert.subject.rfc4514_string(), cn, o))
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
        if ext.value.value != b"\x0c" + bytes([len(role)]) + role.encode():
            die("role extension %r, want UTF8String %s" % (ext.value.value, role))
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if list(eku) != [ExtendedKeyUsageOID.CLIENT_AUTH]:
            die("EKU %r" % list(eku))
        want_dns = [sys.argv[8]] if len(sys.argv) > 8 and sys.argv[8] else []
        want_ip = sys.argv[9:] if len(sys.argv) > 9 else []
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = san.get_values_for_type(x509.DNSName)
            ips = [str(i) for i in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            dns, ips = [], []
        if dns != want_dns or ips != want_ip:
            die("SANs %r %r, want %r %r" % (dns, ips, want_dns, want_ip))
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        print(int(life.total_seconds()))
    elif cmd == "files":
        doc = json.load(open(sys.argv[2]))
        outdir = sys.argv[3]
        h = hashlib.sha256()
        for f in doc["files"]:
            content = base64.b64decode(f["content"], validate=True)
            if hashlib.sha256(content).hexdigest() != f["sha256"]:
                die("sha256 of %s does not match" % f["path"])
            for k in ("path", "mode", "owner", "group", "sha256"):
                h.update(f[k].encode() + b"\0")
            name = f["path"].strip("/").replace("/", "_")
            open(os.path.join(outdir, name), "wb").write(content)
            print("%s %s %s %s" % (f["path"], f["mode"], f["owner"], f["group"]))
        if h.hexdigest() != doc["version"]:
            die("version %s is not the hash of the files (%s)" % (doc["version"], h.hexdigest()))
    elif cmd == "servercert":
        port, bundle_path, names = int(sys.argv[2]), sys.argv[3], sys.argv[4:]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(bundle_path)
        ctx.check_hostname = False
        with socket.create_connection(("127.0.0.1", port)) as s:
            with ctx.wrap_socket(s) as t:
                if t.version() != "TLSv1.3":
                    die("TLS version %s" % t.version())
                der = t.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der)
        verify_by(cert, load_bundle(bundle_path))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        got = san.get_values_for_type(x509.DNSName) + [str(i) for i in san.get_values_for_type(x509.IPAddress)]
        if sorted(got) != sorted(names):
            die("server SANs %r, want %r" % (got, names))
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if list(eku) != [ExtendedKeyUsageOID.SERVER_AUTH]:
            die("server EKU %r" % list(eku))
        if cert.public_key().curve.name != "secp256r1":
            die("server key is not P-256")
    elif cmd == "mkcert":
        from cryptography.hazmat.primitives.asymmetric import ed25519
        outkey, outcrt, cn, orgs, role, oid, nb, na = sys.argv[2:10]
        now = datetime.datetime.now(datetime.timezone.utc)
        if len(sys.argv) > 11:
            ca_cert = x509.load_pem_x509_certificate(open(sys.argv[10], "rb").read())
            ca_key = serialization.load_pem_private_key(open(sys.argv[11], "rb").read(), None)
            issuer = ca_cert.subject
        else:
            ca_key = ed25519.Ed25519PrivateKey.generate()
            issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another CA")])
        key = ed25519.Ed25519PrivateKey.generate()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs.split(",")]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        b = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now + datetime.timedelta(seconds=int(nb)))
             .not_valid_after(now + datetime.timedelta(seconds=int(na)))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if role != "-":
            b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid),
                                                           b"\x0c" + bytes([len(role)]) + role.encode()), critical=False)
        cert = b.sign(ca_key, None)
        open(outkey, "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        open(outcrt, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    elif cmd == "renewloop":
        renewloop(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), sys.argv[7])
    elif cmd == "load":
        load(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7])
    else:
        die("unknown command " + cmd)


main()
