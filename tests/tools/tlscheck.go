// tlscheck: verify nstance-secretsd's TLS chain the way a Go agent of the upstream system does (crypto/tls,
// crypto/x509; standard library only, built offline by the integration tests).
//
//	tlscheck -addr 127.0.0.1:PORT -ca FILE [-name localhost] [-cert CRT -key KEY -get /v1/agent/files]
//
// The pool holds only the certificates of -ca. The server's presented chain is verified by crypto/tls
// (TLS 1.3, ServerName -name); with -get, one HTTPS GET is made with the client certificate and must
// answer 200. Prints what it saw; exit 0 when verified (and 200), 1 otherwise, 2 on usage errors.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	addr := flag.String("addr", "", "host:port of the server")
	caFile := flag.String("ca", "", "PEM file: the only trusted CA certificates")
	name := flag.String("name", "localhost", "the server name to verify")
	certFile := flag.String("cert", "", "client certificate (PEM)")
	keyFile := flag.String("key", "", "client key (PEM)")
	get := flag.String("get", "", "path to GET with the client certificate")
	flag.Parse()
	if *addr == "" || *caFile == "" || (*get != "" && (*certFile == "" || *keyFile == "")) {
		flag.Usage()
		os.Exit(2)
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Println("tlscheck:", err)
		os.Exit(2)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		fmt.Println("tlscheck: no certificate in", *caFile)
		os.Exit(2)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: *name, MinVersion: tls.VersionTLS13}
	if *certFile != "" {
		c, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fmt.Println("tlscheck:", err)
			os.Exit(2)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", *addr, cfg)
	if err != nil {
		fmt.Println("tlscheck: handshake:", err)
		os.Exit(1)
	}
	st := conn.ConnectionState()
	fmt.Printf("tlscheck: presented %d certificate(s); verified chain of %d\n", len(st.PeerCertificates),
		len(st.VerifiedChains[0]))
	conn.Close()
	if *get == "" {
		return
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err := client.Get("https://" + *addr + *get)
	if err != nil {
		fmt.Println("tlscheck: GET:", err)
		os.Exit(1)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Printf("tlscheck: GET %s: %d\n", *get, resp.StatusCode)
	if resp.StatusCode != 200 {
		os.Exit(1)
	}
}
