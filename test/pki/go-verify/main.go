// Command go-verify checks an issued workload certificate with Go's
// crypto/x509 (the verifier of istiod, SPIRE and Envoy's Go peers) and the
// SPIFFE X.509-SVID rules.
//
// usage: go-verify ROOTS_PEM CHAIN_PEM SPIFFE_ID
// CHAIN_PEM: the leaf first, then intermediates. Exit 0 and "ok" on success;
// otherwise exit 1 with the reason on stderr.
package main

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"os"
)

func load(path string) []*x509.Certificate {
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
	if len(out) == 0 {
		fail("%s: no certificate", path)
	}
	return out
}

func fail(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, f+"\n", a...)
	os.Exit(1)
}

var (
	oidKU  = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}
)

func main() {
	if len(os.Args) != 4 {
		fail("usage: go-verify ROOTS_PEM CHAIN_PEM SPIFFE_ID")
	}
	roots := x509.NewCertPool()
	for _, c := range load(os.Args[1]) {
		roots.AddCert(c)
	}
	chain := load(os.Args[2])
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			fail("crypto/x509 verify (usage %v): %v", usage, err)
		}
	}
	// X.509-SVID leaf rules.
	if len(leaf.URIs) != 1 {
		fail("SVID: want exactly one URI SAN, got %d", len(leaf.URIs))
	}
	u := leaf.URIs[0]
	if u.Scheme != "spiffe" || u.Host == "" || u.Path == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Port() != "" {
		fail("SVID: bad SPIFFE ID %q", u.String())
	}
	if u.String() != os.Args[3] {
		fail("SVID: URI SAN %q, want %q", u.String(), os.Args[3])
	}
	if len(leaf.DNSNames)+len(leaf.EmailAddresses)+len(leaf.IPAddresses) != 0 {
		fail("SVID: unexpected non-URI SANs")
	}
	if !leaf.BasicConstraintsValid || leaf.IsCA {
		fail("SVID: leaf must have basicConstraints CA:false")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		fail("SVID: bad key usage %v", leaf.KeyUsage)
	}
	var kuCritical, sanCritical bool
	for _, e := range leaf.Extensions {
		if e.Id.Equal(oidKU) {
			kuCritical = e.Critical
		}
		if e.Id.Equal(oidSAN) {
			sanCritical = e.Critical
		}
	}
	if !kuCritical {
		fail("SVID: keyUsage must be critical")
	}
	if !bytes.Equal(leaf.RawSubject, []byte{0x30, 0x00}) || !sanCritical {
		fail("profile: empty subject with a critical SAN expected")
	}
	var server, client bool
	for _, e := range leaf.ExtKeyUsage {
		server = server || e == x509.ExtKeyUsageServerAuth
		client = client || e == x509.ExtKeyUsageClientAuth
	}
	if !server || !client || len(leaf.UnknownExtKeyUsage) != 0 {
		fail("SVID: EKU must hold serverAuth and clientAuth")
	}
	issuer := chain[0]
	if len(chain) > 1 {
		issuer = chain[1]
	} else {
		issuer = load(os.Args[1])[0]
	}
	if len(leaf.AuthorityKeyId) == 0 || (len(chain) > 1 && !bytes.Equal(leaf.AuthorityKeyId, issuer.SubjectKeyId)) {
		fail("profile: authority key identifier missing or not the issuer's")
	}
	if leaf.SerialNumber.Sign() <= 0 || len(leaf.SerialNumber.Bytes()) > 20 {
		fail("profile: serial must be positive and at most 20 octets")
	}
	fmt.Println("ok")
}
