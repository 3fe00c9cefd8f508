#!/usr/bin/env python3
"""Clients that misbehave, for tests/integration/server-limits.sh.

  slowclient.py idle PORT                 TLS handshake, half a request line, then nothing: prints the seconds
                                          until the server closes the connection
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


def main():
    cmd, port = sys.argv[1], int(sys.argv[2])
    if cmd == "idle":
        t = connect(port)
        t.sendall(b"GET /health HTTP/1.1\r\n")
        t0 = time.time()
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
        lines = [l.decode("latin-1") for l in got.split(b"\r\n") if l.startswith(b"HTTP/")]
        print("\n".join(lines) if lines else "no answer")
    else:
        sys.exit("unknown command")


main()
