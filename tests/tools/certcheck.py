#!/usr/bin/env python3
"""Independent checks of nstance-secrets certificates (python3-cryptography).

  certcheck.py ca CERT [--path-len N] [--days D]
      a CA certificate: v3, positive serial of 9..20 octets, CA:TRUE critical with the path length,
      keyUsage keyCertSign+cRLSign+digitalSignature critical, SKI present, AKI keyid = SKI when self-signed,
      validity about D days.
  certcheck.py leaf CERT --cn CN --tenant T [--role R] [--role-oid OID] [--kind client|server]
                         [--dns N]... [--ip A]... [--uri U]... [--ttl SECONDS] [--issuer CA]
      an issued certificate: exactly these names, extensions and lifetime; AKI = the issuer's SKI.
  certcheck.py serial CERT        print the serial in lower-case hex (no leading zeros)
Exit 0 when every check holds, else 1 with the reasons on stderr.
"""
import datetime
import ipaddress
import sys
import warnings

warnings.simplefilter("ignore")  # naive-datetime deprecation notices of newer python3-cryptography

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)


def load(path):
    return x509.load_pem_x509_certificate(open(path, "rb").read())


def ext(cert, oid):
    try:
        return cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def serial_checks(cert):
    s = cert.serial_number
    check(s > 0, "serial not positive")
    octets = (s.bit_length() + 8) // 8  # DER: a leading zero octet when the top bit is set
    check(octets <= 20, "serial longer than 20 octets")
    check(s.bit_length() >= 64, "serial shorter than 64 bits")


def lifetime(cert):
    return (cert.not_valid_after - cert.not_valid_before).total_seconds()


def main(argv):
    mode, path = argv[1], argv[2]
    opts = {"dns": [], "ip": [], "uri": []}
    i = 3
    while i < len(argv):
        k = argv[i][2:]
        v = argv[i + 1]
        if k in ("dns", "ip", "uri"):
            opts[k].append(v)
        else:
            opts[k] = v
        i += 2
    cert = load(path)
    if mode == "serial":
        print("%x" % cert.serial_number)
        return 0
    check(cert.version == x509.Version.v3, "not version 3")
    serial_checks(cert)
    bc = ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    ku = ext(cert, ExtensionOID.KEY_USAGE)
    ski = ext(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    aki = ext(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    check(bc is not None and bc.critical, "basicConstraints missing or not critical")
    check(ku is not None and ku.critical, "keyUsage missing or not critical")
    check(ski is not None, "no subjectKeyIdentifier")
    check(aki is not None and aki.value.key_identifier is not None, "no authorityKeyIdentifier keyid")
    if mode == "ca":
        check(bc.value.ca, "CA:FALSE in a CA certificate")
        check(bc.value.path_length == int(opts.get("path-len", "0")), "path length %r" % bc.value.path_length)
        check(ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature, "CA key usage incomplete")
        if cert.issuer == cert.subject and "issuer" not in opts:
            check(aki.value.key_identifier == ski.value.digest, "self-signed AKI != SKI")
        days = float(opts.get("days", "3650"))
        check(abs(lifetime(cert) - days * 86400) <= 600, "CA lifetime %.0f s, want %.0f days" % (lifetime(cert), days))
    else:
        check(not bc.value.ca, "CA:TRUE in a leaf")
        check(ku.value.digital_signature and not ku.value.key_cert_sign, "leaf key usage wrong")
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        o = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        check(len(cn) == 1 and cn[0].value == opts["cn"], "CN %r" % [a.value for a in cn])
        check(len(o) == 1 and o[0].value == opts["tenant"], "O (tenant) %r" % [a.value for a in o])
        check(len(cert.subject) == 2, "subject has extra attributes: %s" % cert.subject.rfc4514_string())
        eku = ext(cert, ExtensionOID.EXTENDED_KEY_USAGE)
        want = ExtendedKeyUsageOID.SERVER_AUTH if opts.get("kind") == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        check(eku is not None and list(eku.value) == [want], "EKU %r" % (eku and list(eku.value)))
        oid = x509.ObjectIdentifier(opts.get("role-oid", "1.3.6.1.4.1.999999.1"))
        role = ext(cert, oid)
        if "role" in opts:
            der = opts["role"].encode()
            check(role is not None and not role.critical, "role extension missing or critical")
            check(role is not None and role.value.value == bytes([0x0C, len(der)]) + der,
                  "role extension value %r" % (role and role.value.value))
        else:
            check(role is None, "unexpected role extension")
        san = ext(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        got_dns = san.value.get_values_for_type(x509.DNSName) if san else []
        got_ip = [str(a) for a in san.value.get_values_for_type(x509.IPAddress)] if san else []
        got_uri = san.value.get_values_for_type(x509.UniformResourceIdentifier) if san else []
        check(got_dns == opts["dns"], "DNS SANs %r" % got_dns)
        check(got_ip == [str(ipaddress.ip_address(a)) for a in opts["ip"]], "IP SANs %r" % got_ip)
        check(got_uri == opts["uri"], "URI SANs %r" % got_uri)
        if "ttl" in opts:
            # not_before is back-dated by 5 minutes (clock skew)
            check(abs(lifetime(cert) - float(opts["ttl"]) - 300) <= 120, "lifetime %.0f s" % lifetime(cert))
        check(cert.not_valid_after > datetime.datetime.utcnow(), "already expired")
    if "issuer" in opts:
        ca = load(opts["issuer"])
        ca_ski = ca.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER).value.digest
        check(aki.value.key_identifier == ca_ski, "AKI is not the issuer's SKI")
        check(cert.issuer == ca.subject, "issuer name is not the CA's subject")
    for e in errors:
        print("certcheck: %s: %s" % (path, e), file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
