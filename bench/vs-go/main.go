// Command vs-go is the Go side of bench/vs-go: the istiod/SPIRE signing core
// (PEM decode, x509.ParseCertificateRequest, CheckSignature,
// x509.CreateCertificate, PEM encode) issuing Castellan's exact leaf profile
// (empty subject, critical KU digitalSignature+keyEncipherment, EKU
// serverAuth+clientAuth, critical CA:false, SKI, AKI, one critical URI SAN,
// random positive 128-bit serial, 60 s backdate, notAfter capped at the CA's).
//
// usage: vs-go CA_CERT_PEM CA_KEY_PEM CSRS_PEM SPIFFE_ID N WORKERS
// Prints one JSON line: {"n","errors","wallSec","cpuSec"}; CPU time is this
// process's own (getrusage), so GC and every goroutine are counted.
package main

import (
	"crypto"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type spki struct {
	Algorithm pkix.AlgorithmIdentifier
	PublicKey asn1.BitString
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	must(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func issue(csrPem []byte, id string, uri *url.URL, ca *x509.Certificate, key crypto.Signer) ([]byte, error) {
	block, _ := pem.Decode(csrPem)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("bad PEM")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	if len(csr.URIs) > 1 || (len(csr.URIs) == 1 && csr.URIs[0].String() != id) {
		return nil, fmt.Errorf("identity mismatch")
	}
	var pk spki
	if _, err := asn1.Unmarshal(csr.RawSubjectPublicKeyInfo, &pk); err != nil {
		return nil, err
	}
	ski := sha1.Sum(pk.PublicKey.Bytes)
	serial := make([]byte, 16)
	if _, err := rand.Read(serial); err != nil {
		return nil, err
	}
	serial[0] = serial[0]&0x3f | 0x40
	now := time.Now()
	notAfter := now.Add(time.Hour)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(serial),
		NotBefore:             now.Add(-60 * time.Second),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          ski[:],
		URIs:                  []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, csr.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func main() {
	if len(os.Args) != 7 {
		fmt.Fprintln(os.Stderr, "usage: vs-go CA_CERT_PEM CA_KEY_PEM CSRS_PEM SPIFFE_ID N WORKERS")
		os.Exit(2)
	}
	certPem, err := os.ReadFile(os.Args[1])
	must(err)
	keyPem, err := os.ReadFile(os.Args[2])
	must(err)
	csrsPem, err := os.ReadFile(os.Args[3])
	must(err)
	id := os.Args[4]
	n, err := strconv.Atoi(os.Args[5])
	must(err)
	workers, err := strconv.Atoi(os.Args[6])
	must(err)

	cb, _ := pem.Decode(certPem)
	ca, err := x509.ParseCertificate(cb.Bytes)
	must(err)
	kb, _ := pem.Decode(keyPem)
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	must(err)
	key := k.(crypto.Signer)
	uri, err := url.Parse(id)
	must(err)
	var csrs [][]byte
	for rest := csrsPem; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		csrs = append(csrs, pem.EncodeToMemory(b))
	}
	if len(csrs) == 0 {
		must(fmt.Errorf("no CSR in %s", os.Args[3]))
	}
	// Warm up (and prove the profile issues) before measuring.
	for i := 0; i < 200; i++ {
		_, err := issue(csrs[i%len(csrs)], id, uri, ca, key)
		must(err)
	}

	var next, errors int64
	var wg sync.WaitGroup
	cpu0 := cpuSeconds()
	t0 := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := atomic.AddInt64(&next, 1) - 1
				if i >= int64(n) {
					return
				}
				if _, err := issue(csrs[i%int64(len(csrs))], id, uri, ca, key); err != nil {
					atomic.AddInt64(&errors, 1)
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(t0).Seconds()
	cpu := cpuSeconds() - cpu0
	out, _ := json.Marshal(map[string]interface{}{"n": n, "errors": errors, "wallSec": wall, "cpuSec": cpu})
	fmt.Println(string(out))
}
