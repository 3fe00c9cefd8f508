#!/usr/bin/env python3
"""Load for nstance-secretsd (doc/server.md, "Threads"): C clients renew certificates in a loop for S seconds
(each renewal is one CA signature, in the token when the CA key is a token key, plus storage writes) while one
more client times GET /health. Prints renewals/s and the /health latency (median, max).

  server-load.py PORT CA_BUNDLE CERT KEY CONCURRENCY SECONDS
"""
import socket, ssl, statistics, sys, threading, time

port, ca, cert, key, conc, secs = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6])


def connect(with_cert):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.load_verify_locations(ca)
    if with_cert:
        c.load_cert_chain(cert, key)
    return c.wrap_socket(socket.create_connection(("127.0.0.1", port)))


def request(t, raw):
    t.sendall(raw)
    data = b""
    while True:
        d = t.recv(65536)
        if not d:
            raise RuntimeError("closed")
        data += d
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
            if len(body) >= n:
                return head.split(b"\r\n")[0]


stop = time.time() + secs
counts = [0] * conc


def renewer(i):
    t = connect(True)
    raw = b"POST /v1/agent/renew HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    while time.time() < stop:
        status = request(t, raw)
        if b" 200 " not in status:
            raise SystemExit("renew: %r" % status)
        counts[i] += 1


threads = [threading.Thread(target=renewer, args=(i,)) for i in range(conc)]
for th in threads:
    th.start()
lat = []
h = connect(False)
while time.time() < stop:
    t0 = time.perf_counter()
    request(h, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    lat.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.01)
for th in threads:
    th.join()
print("renewals/s %.0f  health ms median %.2f max %.1f (n=%d)" % (sum(counts) / secs, statistics.median(lat), max(lat), len(lat)))
