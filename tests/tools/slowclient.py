#!/usr/bin/env python3
"""Clients that misbehave, for tests/integration/server-limits.sh.

  slowclient.py idle PORT                 TLS handshake, half a request line, then nothing: prints the seconds
                                          until the server closes the connection ("connected" on stderr once
                                          the half line is sent)
  slowclient.py cap PORT N                N idle TLS connections, then one more: prints "refused" or
                                          "accepted" for the extra one, then closes all and checks that a new
                                          connection works again ("recovered")
  slowclient.py keepalive PORT            one request on a keep-alive connection, then nothing: prints the
                                          seconds until the server closes it
  slowclient.py trickle PORT CA DELAY     a /health request whose headers arrive DELAY seconds after the
                                          request line; prints the status line ("connected" on stderr once
                                          the request line is sent)
  slowclient.py send PORT FILE            the bytes of FILE as they are (any request, well-formed or not) on one
                                          TLS connection, then reads until the server closes it (10 s at most);
                                          prints the status line of every answer, or "no answer"
  slowclient.py trickle-many PORT KIND N SECONDS GAP
                                          N connections that each send one byte every GAP seconds, for SECONDS:
                                          KIND "head" (TLS, then a request head byte by byte), "tls" (the TLS
                                          ClientHello itself byte by byte) or "next" (one request answered,
                                          then the next head byte by byte). A connection the server closes is
                                          opened again 0.5 s later. Prints one line per connection the server
                                          closed: "closed KIND LIFETIME" (seconds from connect, or from the
                                          first answer for "next"); then "open KIND AGE" for those still open.
                                          On stderr "up KIND" whenever a connection sent its first byte
  slowclient.py flood PORT N STOPFILE     N TCP connections that send nothing; prints "connected N" once they
                                          are made (the kernel completes them whether or not the server
                                          accepts), waits for STOPFILE, then prints "closed-by-server K" (how
                                          many the server had closed) and closes the rest
"""
import socket, ssl, sys, time


def ctx(ca=None):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    if ca:
        c.load_verify_locations(ca)
    else:
        c.verify_mode = ssl.CERT_NONE
    return c


def connect(port, ca=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    return ctx(ca).wrap_socket(s)


def trickle_many(port, kind, n, seconds, gap):
    import threading

    out, lock, stop = [], threading.Lock(), time.time() + seconds

    def one():
        while time.time() < stop:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
            except OSError:
                time.sleep(0.5)
                continue
            t0 = time.time()
            try:
                if kind == "tls":
                    # The ClientHello as the ssl module writes it, sent one byte at a time.
                    inc, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
                    o = ctx().wrap_bio(inc, outb)
                    try:
                        o.do_handshake()
                    except ssl.SSLWantReadError:
                        pass
                    data = outb.read()
                else:
                    s = ctx().wrap_socket(s)
                    if kind == "next":
                        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                        got = b""
                        while b"ok\n" not in got:
                            d = s.recv(4096)
                            if not d:
                                raise OSError("closed before the answer")
                            got += d
                        t0 = time.time()
                    data = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 4096
                s.settimeout(gap)
                closed = False
                for i in range(len(data)):
                    if time.time() >= stop:
                        break
                    s.sendall(data[i:i + 1])
                    if i == 0:
                        with lock:
                            sys.stderr.write("up %s\n" % kind)  # a test may wait for these
                            sys.stderr.flush()
                    try:
                        if not s.recv(4096):  # waits GAP seconds unless the server closes
                            closed = True
                            break
                    except socket.timeout:
                        pass
                    except ssl.SSLWantReadError:
                        time.sleep(gap)
            except (ssl.SSLError, OSError):
                closed = True
            with lock:
                if closed:
                    out.append("closed %s %.1f" % (kind, time.time() - t0))
                else:
                    out.append("open %s %.1f" % (kind, time.time() - t0))
            s.close()
            if closed:
                time.sleep(0.5)

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("\n".join(out))
    sys.stdout.flush()


def flood(port, n, stopfile):
    import os, select

    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    print("connected %d" % len(conns))
    sys.stdout.flush()
    while not os.path.exists(stopfile):
        time.sleep(0.05)
    gone = 0
    for c in conns:
        c.setblocking(False)
        try:
            if c.recv(1) == b"":
                gone += 1
        except BlockingIOError:
            pass
        except OSError:
            gone += 1
        c.close()
    print("closed-by-server %d" % gone)


def main():
    cmd, port = sys.argv[1], int(sys.argv[2])
    if cmd == "idle":
        t = connect(port)
        t.sendall(b"GET /health HTTP/1.1\r\n")
        t0 = time.time()
        sys.stderr.write("connected\n")  # a test may wait for this before acting on the server
        sys.stderr.flush()
        try:
            while t.recv(4096):
                pass
        except (ssl.SSLError, OSError):
            pass
        print("%.1f" % (time.time() - t0))
    elif cmd == "cap":
        n = int(sys.argv[3])
        conns = [connect(port) for _ in range(n)]
        time.sleep(0.3)
        try:
            extra = connect(port)
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = extra.recv(4096)
            print("accepted" if data else "refused")
        except (ssl.SSLError, OSError):
            print("refused")
        for c in conns:
            c.close()
        time.sleep(0.5)
        t = connect(port)
        t.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = t.recv(4096)
        print("recovered" if data.startswith(b"HTTP/1.1 200") else "not recovered: %r" % data[:40])
    elif cmd == "keepalive":
        t = connect(port)
        t.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"ok\n" not in data:
            d = t.recv(4096)
            if not d:
                sys.exit("closed before the answer")
            data += d
        t0 = time.time()
        try:
            while t.recv(4096):
                pass
        except (ssl.SSLError, OSError):
            pass
        print("%.1f" % (time.time() - t0))
    elif cmd == "trickle":
        t = connect(port, sys.argv[3])
        t.sendall(b"GET /health HTTP/1.1\r\n")
        sys.stderr.write("connected\n")  # a test may wait for this before acting on the server
        sys.stderr.flush()
        time.sleep(float(sys.argv[4]))
        t.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = t.recv(4096)
            if not d:
                break
            data += d
        print(data.split(b"\r\n")[0].decode())
    elif cmd == "send":
        data = open(sys.argv[3], "rb").read()
        t = connect(port)
        t.settimeout(10)
        try:
            t.sendall(data)
        except (ssl.SSLError, OSError):
            pass  # the server may answer and close before it has read everything: read what it said
        got = b""
        try:
            while True:
                d = t.recv(65536)
                if not d:
                    break
                got += d
        except (ssl.SSLError, OSError):
            pass
        # Split at LF: a JSON body ends in "\n", so the next answer's status line follows a bare LF.
        lines = [l.rstrip(b"\r").decode("latin-1") for l in got.split(b"\n") if l.startswith(b"HTTP/")]
        print("\n".join(lines) if lines else "no answer")
    elif cmd == "flood":
        flood(port, int(sys.argv[3]), sys.argv[4])
    elif cmd == "trickle-many":
        trickle_many(port, sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]))
    else:
        sys.exit("unknown command")


main()
