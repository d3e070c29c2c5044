// Prints a PEM CSR made by Go's crypto/x509 (the library istiod and
// ztunnel's Go tooling use): a P-256 key, a URI SAN, a DNS SAN and a
// non-critical extension, so the strict parser sees what Go emits.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"
	"os"
)

func main() {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	u, err := url.Parse(os.Args[1])
	if err != nil {
		panic(err)
	}
	tmpl := &x509.CertificateRequest{
		Subject:  pkix.Name{Organization: []string{"ignored"}},
		URIs:     []*url.URL{u},
		DNSNames: []string{"a.example"},
		ExtraExtensions: []pkix.Extension{
			// basicConstraints, not critical: Go omits the FALSE flag as DER requires
			{Id: []int{2, 5, 29, 19}, Critical: false, Value: []byte{0x30, 0x00}},
		},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		panic(err)
	}
	pem.Encode(os.Stdout, &pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
