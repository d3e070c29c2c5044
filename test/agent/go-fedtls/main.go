// Command go-fedtls is an independent mutual-TLS peer for the federation
// scoping tests: Go's crypto/tls and crypto/x509, validating the peer the way
// go-spiffe does — read the peer's one SPIFFE ID, take the bundle of ITS trust
// domain only, and verify the chain against that pool.
//
//	go-fedtls server -cert CHAIN -key KEY -bundle TD=PEMFILE... [-one-pool]
//	go-fedtls client -addr HOST:PORT -cert CHAIN -key KEY -bundle TD=PEMFILE... [-one-pool]
//
// The server prints "listening ADDR", then for every connection one line:
// "accepted PEER_ID" or "refused REASON"; an accepted peer is sent
// "hello PEER_ID, this is OWN_ID\n". The client prints "ok PEER_ID LINE" or
// "refused REASON" and exits 0 or 1.
//
// -one-pool puts every bundle's roots into one pool whatever the peer's trust
// domain: the broken validation the scoping tests show would let a forged
// certificate through (a control, never a way to run).
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
)

type bundles map[string]*x509.CertPool

type bundleFlag struct{ files map[string]string }

func (b *bundleFlag) String() string { return "" }
func (b *bundleFlag) Set(v string) error {
	i := strings.IndexByte(v, '=')
	if i <= 0 {
		return errors.New("want TD=FILE")
	}
	b.files[v[:i]] = v[i+1:]
	return nil
}

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(2)
}

func load(files map[string]string) bundles {
	out := bundles{}
	for td, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			die("read %s: %v", f, err)
		}
		pool := x509.NewCertPool()
		n := 0
		for {
			var blk *pem.Block
			blk, data = pem.Decode(data)
			if blk == nil {
				break
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				die("parse %s: %v", f, err)
			}
			pool.AddCert(c)
			n++
		}
		if n == 0 {
			die("no certificate in %s", f)
		}
		out[td] = pool
	}
	return out
}

// spiffeID returns the one SPIFFE URI SAN of a leaf and its trust domain.
func spiffeID(c *x509.Certificate) (string, string, error) {
	if len(c.URIs) != 1 {
		return "", "", fmt.Errorf("peer certificate has %d URI SANs, want 1", len(c.URIs))
	}
	u := c.URIs[0]
	if u.Scheme != "spiffe" || u.Host == "" {
		return "", "", fmt.Errorf("peer URI SAN %q is not a SPIFFE ID", u.String())
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String(), u.Host, nil
}

func verifier(b bundles, onePool bool, raws []string) func([][]byte, [][]*x509.Certificate) error {
	all := x509.NewCertPool()
	for _, f := range raws {
		data, _ := os.ReadFile(f)
		all.AppendCertsFromPEM(data)
	}
	return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		if len(rawCerts) == 0 {
			return errors.New("no peer certificate")
		}
		var chain []*x509.Certificate
		for _, r := range rawCerts {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			chain = append(chain, c)
		}
		_, td, err := spiffeID(chain[0])
		if err != nil {
			return err
		}
		pool := all
		if !onePool {
			p, ok := b[td]
			if !ok {
				return fmt.Errorf("no bundle for trust domain %q", td)
			}
			pool = p
		}
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		_, err = chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return fmt.Errorf("chain does not verify against the bundle of %q: %v", td, err)
		}
		return nil
	}
}

func main() {
	if len(os.Args) < 2 {
		die("usage: go-fedtls server|client ...")
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	certFile := fs.String("cert", "", "certificate chain PEM")
	keyFile := fs.String("key", "", "private key PEM")
	addr := fs.String("addr", "127.0.0.1:0", "address")
	onePool := fs.Bool("one-pool", false, "broken: one pool of every root")
	bf := &bundleFlag{files: map[string]string{}}
	fs.Var(bf, "bundle", "TD=PEMFILE (repeatable)")
	_ = fs.Parse(os.Args[2:])
	pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		die("key pair: %v", err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	own, _, err := spiffeID(leaf)
	if err != nil {
		die("own certificate: %v", err)
	}
	var raws []string
	for _, f := range bf.files {
		raws = append(raws, f)
	}
	verify := verifier(load(bf.files), *onePool, raws)
	cfg := &tls.Config{
		Certificates:          []tls.Certificate{pair},
		InsecureSkipVerify:    true, // replaced by VerifyPeerCertificate: the pool depends on the peer's trust domain
		VerifyPeerCertificate: verify,
		ClientAuth:            tls.RequireAnyClientCert,
		MinVersion:            tls.VersionTLS12,
	}
	switch mode {
	case "server":
		serve(cfg, *addr, own)
	case "client":
		dial(cfg, *addr)
	default:
		die("unknown mode %q", mode)
	}
}

func serve(cfg *tls.Config, addr, own string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		die("listen: %v", err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			die("accept: %v", err)
		}
		t := tls.Server(c, cfg)
		if err := t.Handshake(); err != nil {
			fmt.Printf("refused %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
			c.Close()
			continue
		}
		peer, _, _ := spiffeID(t.ConnectionState().PeerCertificates[0])
		fmt.Printf("accepted %s\n", peer)
		fmt.Fprintf(t, "hello %s, this is %s\n", peer, own)
		t.Close()
	}
}

func dial(cfg *tls.Config, addr string) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		fmt.Printf("refused %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
	defer c.Close()
	peer, _, _ := spiffeID(c.ConnectionState().PeerCertificates[0])
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Printf("ok %s %s\n", peer, strings.TrimSpace(line))
}
