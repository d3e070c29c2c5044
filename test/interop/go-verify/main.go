// Command go-verify checks a Castellan-issued chain with Go's crypto/x509
// (the verifier inside istiod, SPIRE and Envoy's Go peers) and the SPIFFE
// X.509-SVID leaf rules. Usage: go-verify ROOTS_PEM CHAIN_PEM SPIFFE_ID
package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

func certs(path string) []*x509.Certificate {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("read %s: %v", path, err)
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			fail("parse %s: %v", path, err)
		}
		out = append(out, c)
	}
	return out
}

func fail(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "go-verify: "+f+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fail("usage: go-verify ROOTS CHAIN SPIFFE_ID")
	}
	roots := x509.NewCertPool()
	for _, c := range certs(os.Args[1]) {
		roots.AddCert(c)
	}
	chain := certs(os.Args[2])
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			fail("verify (usage %v): %v", usage, err)
		}
	}
	// X.509-SVID leaf rules.
	if len(leaf.URIs) != 1 {
		fail("want exactly one URI SAN, got %d", len(leaf.URIs))
	}
	if leaf.URIs[0].Scheme != "spiffe" || leaf.URIs[0].String() != os.Args[3] {
		fail("URI SAN %q, want %q", leaf.URIs[0].String(), os.Args[3])
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		fail("leaf must have basicConstraints CA:false")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		fail("bad key usage %v", leaf.KeyUsage)
	}
	if len(leaf.DNSNames)+len(leaf.EmailAddresses)+len(leaf.IPAddresses) != 0 || strings.TrimSpace(leaf.Subject.String()) != "" {
		fail("leaf must carry only the SPIFFE ID (subject %q)", leaf.Subject.String())
	}
	for _, c := range chain[1:] {
		if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
			fail("intermediate %q is not a CA", c.Subject.String())
		}
	}
	fmt.Println("ok")
}
