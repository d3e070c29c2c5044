// Command grpc-go holds the Go side of bench/grpc-e2e, built on grpc-go (the
// gRPC implementation istiod itself runs on):
//
//	grpc-go server  LISTEN CERT KEY CA_CERT CA_KEY JWKS ISSUER AUDIENCE TRUST_DOMAIN
//	grpc-go loadgen JOB_JSON
//
// server is an istiod-shaped baseline for IstioCertificateService/
// CreateCertificate: TLS, a bearer JWT checked locally (ES256 or RS256 against a JWKS
// file: iss, aud, exp, nbf, sub = system:serviceaccount:NS:SA), then the
// signing core of bench/vs-go (parse the CSR, CheckSignature, the identity
// check, x509.CreateCertificate) and the chain [leaf, root], so the benchmark
// can compare issuances per server CPU-second with Castellan's server doing
// the same work. It exits when its stdin closes.
//
// loadgen is a second, independent client for the same benchmark: it reads the
// job file of bench/lib/loadgen.ts, prints READY, waits for a line on stdin,
// runs the job and prints the same JSON result. Written against grpc-go, it
// costs the shared machine less CPU than a Node client.
//
// Messages are encoded by hand (no generated code needed):
// IstioCertificateRequest {1: csr string, 2: validity_duration int64} and
// IstioCertificateResponse {1: repeated cert_chain string}.
package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const method = "/istio.v1.auth.IstioCertificateService/CreateCertificate"

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc-go:", err)
		os.Exit(1)
	}
}

// rawCodec moves already-encoded message bytes; both sides encode with protowire.
type rawCodec struct{}

type frame struct{ b []byte }

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return v.(*frame).b, nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	v.(*frame).b = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string   { return "proto" }
func (rawCodec) String() string { return "proto" }

var _ encoding.Codec = rawCodec{}

// Protobuf wire format, the little of it these two messages need.
func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendString(b []byte, field int, s string) []byte {
	b = appendVarint(b, uint64(field)<<3|2)
	b = appendVarint(b, uint64(len(s)))
	return append(b, s...)
}

func varint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * uint(i))
		if b[i] < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("bad varint")
}

// fields calls f for every field of message b: number, wire type, varint value
// or length-delimited bytes (other wire types are an error here).
func fields(b []byte, f func(num int, typ int, v uint64, data []byte)) error {
	for len(b) > 0 {
		tag, n, err := varint(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch typ := int(tag & 7); typ {
		case 0:
			v, m, err := varint(b)
			if err != nil {
				return err
			}
			f(int(tag>>3), typ, v, nil)
			b = b[m:]
		case 2:
			l, m, err := varint(b)
			if err != nil || uint64(len(b)-m) < l {
				return errors.New("bad length")
			}
			f(int(tag>>3), typ, 0, b[m:m+int(l)])
			b = b[m+int(l):]
		default:
			return fmt.Errorf("unexpected wire type %d", typ)
		}
	}
	return nil
}

func encodeRequest(csr string, validitySec int64) []byte {
	b := appendString(nil, 1, csr)
	b = appendVarint(b, 2<<3|0)
	return appendVarint(b, uint64(validitySec))
}

func decodeRequest(b []byte) (csr string, validity int64, err error) {
	err = fields(b, func(num, typ int, v uint64, data []byte) {
		switch {
		case num == 1 && typ == 2:
			csr = string(data)
		case num == 2 && typ == 0:
			validity = int64(v)
		}
	})
	return csr, validity, err
}

func encodeResponse(chain []string) []byte {
	var b []byte
	for _, c := range chain {
		b = appendString(b, 1, c)
	}
	return b
}

func countChain(b []byte) (int, error) {
	n := 0
	err := fields(b, func(num, typ int, _ uint64, _ []byte) {
		if num == 1 && typ == 2 {
			n++
		}
	})
	return n, err
}

// ---- server ----

type verifier struct {
	keys     map[string]crypto.PublicKey
	issuer   string
	audience string
}

func b64(s string) []byte {
	b, err := base64.RawURLEncoding.DecodeString(s)
	must(err)
	return b
}

// loadJWKS reads the P-256 (ES256) and RSA (RS256) keys of a JWKS file.
func loadJWKS(path string) map[string]crypto.PublicKey {
	raw, err := os.ReadFile(path)
	must(err)
	var set struct {
		Keys []struct{ Kty, Crv, X, Y, N, E, Kid string } `json:"keys"`
	}
	must(json.Unmarshal(raw, &set))
	keys := map[string]crypto.PublicKey{}
	for _, k := range set.Keys {
		switch {
		case k.Kty == "EC" && k.Crv == "P-256":
			keys[k.Kid] = &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(b64(k.X)), Y: new(big.Int).SetBytes(b64(k.Y))}
		case k.Kty == "RSA":
			keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(b64(k.N)), E: int(new(big.Int).SetBytes(b64(k.E)).Int64())}
		}
	}
	if len(keys) == 0 {
		must(errors.New("no P-256 or RSA key in " + path))
	}
	return keys
}

// verifySig checks an ES256 or RS256 signature over the SHA-256 digest of the signing input.
func verifySig(alg string, key crypto.PublicKey, digest []byte, sig []byte) error {
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		if alg != "ES256" || len(sig) != 64 {
			return errors.New("bad algorithm or signature encoding")
		}
		if !ecdsa.Verify(k, digest, new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			return errors.New("bad signature")
		}
		return nil
	case *rsa.PublicKey:
		if alg != "RS256" {
			return errors.New("bad algorithm")
		}
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig)
	}
	return errors.New("unknown key type")
}

// identity checks a compact ES256 or RS256 JWT and returns "NS/SA" of its subject.
func (v *verifier) identity(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("not a compact JWS")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", err
	}
	var h struct{ Alg, Kid string }
	if err := json.Unmarshal(hb, &h); err != nil {
		return "", err
	}
	key := v.keys[h.Kid]
	if key == nil {
		return "", errors.New("unknown key")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", errors.New("bad signature encoding")
	}
	digest := sha256.Sum256([]byte(token[:len(parts[0])+1+len(parts[1])]))
	if err := verifySig(h.Alg, key, digest[:], sig); err != nil {
		return "", err
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var c struct {
		Iss string          `json:"iss"`
		Sub string          `json:"sub"`
		Aud json.RawMessage `json:"aud"`
		Exp float64         `json:"exp"`
		Nbf float64         `json:"nbf"`
	}
	if err := json.Unmarshal(pb, &c); err != nil {
		return "", err
	}
	now := float64(time.Now().Unix())
	if c.Iss != v.issuer || c.Exp <= now || c.Nbf > now+60 {
		return "", errors.New("issuer or lifetime rejected")
	}
	var auds []string
	if json.Unmarshal(c.Aud, &auds) != nil {
		var one string
		if json.Unmarshal(c.Aud, &one) != nil {
			return "", errors.New("bad aud")
		}
		auds = []string{one}
	}
	ok := false
	for _, a := range auds {
		ok = ok || a == v.audience
	}
	if !ok {
		return "", errors.New("audience rejected")
	}
	f := strings.Split(c.Sub, ":")
	if len(f) != 4 || f[0] != "system" || f[1] != "serviceaccount" || f[2] == "" || f[3] == "" {
		return "", errors.New("subject is not a service account")
	}
	return f[2] + "/" + f[3], nil
}

type spki struct {
	Algorithm pkix.AlgorithmIdentifier
	PublicKey asn1.BitString
}

type ca struct {
	cert    *x509.Certificate
	key     crypto.Signer
	rootPem string
	td      string
	jwt     *verifier
}

func (s *ca) createCertificate(ctx context.Context, req []byte) ([]byte, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get("authorization")
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
		return nil, status.Error(codes.Unauthenticated, "no bearer token")
	}
	who, err := s.jwt.identity(strings.TrimPrefix(auth[0], "Bearer "))
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	id := "spiffe://" + s.td + "/ns/" + strings.Replace(who, "/", "/sa/", 1)
	csrPem, validity, err := decodeRequest(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	block, _ := pem.Decode([]byte(csrPem))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, status.Error(codes.InvalidArgument, "bad CSR PEM")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(csr.URIs) > 1 || (len(csr.URIs) == 1 && csr.URIs[0].String() != id) {
		return nil, status.Error(codes.PermissionDenied, "identity mismatch")
	}
	uri, err := url.Parse(id)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	var pk spki
	if _, err := asn1.Unmarshal(csr.RawSubjectPublicKeyInfo, &pk); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ski := sha1.Sum(pk.PublicKey.Bytes)
	serial := make([]byte, 16)
	if _, err := rand.Read(serial); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	serial[0] = serial[0]&0x3f | 0x40
	if validity <= 0 {
		validity = 86400
	}
	now := time.Now()
	notAfter := now.Add(time.Duration(validity) * time.Second)
	if notAfter.After(s.cert.NotAfter) {
		notAfter = s.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(serial),
		NotBefore:             now.Add(-60 * time.Second),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		SubjectKeyId:          ski[:],
		URIs:                  []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.cert, csr.PublicKey, s.key)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	leaf := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return encodeResponse([]string{leaf, s.rootPem}), nil
}

func serve(args []string) {
	if len(args) != 9 {
		must(errors.New("usage: grpc-go server LISTEN CERT KEY CA_CERT CA_KEY JWKS ISSUER AUDIENCE TRUST_DOMAIN"))
	}
	serving, err := tls.LoadX509KeyPair(args[1], args[2])
	must(err)
	caPem, err := os.ReadFile(args[3])
	must(err)
	keyPem, err := os.ReadFile(args[4])
	must(err)
	cb, _ := pem.Decode(caPem)
	cert, err := x509.ParseCertificate(cb.Bytes)
	must(err)
	kb, _ := pem.Decode(keyPem)
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	must(err)
	s := &ca{cert: cert, key: k.(crypto.Signer), rootPem: string(caPem), td: args[8],
		jwt: &verifier{keys: loadJWKS(args[5]), issuer: args[6], audience: args[7]}}

	desc := grpc.ServiceDesc{
		ServiceName: "istio.v1.auth.IstioCertificateService",
		HandlerType: (*interface{})(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "CreateCertificate",
			Handler: func(_ interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
				in := &frame{}
				if err := dec(in); err != nil {
					return nil, err
				}
				out, err := s.createCertificate(ctx, in.b)
				if err != nil {
					return nil, err
				}
				return &frame{b: out}, nil
			},
		}},
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serving}, MinVersion: tls.VersionTLS12})),
		grpc.CustomCodec(rawCodec{}), grpc.MaxConcurrentStreams(1000))
	srv.RegisterService(&desc, s)
	lis, err := net.Listen("tcp", args[0])
	must(err)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0) // stdin closed: the benchmark is done with us
	}()
	must(srv.Serve(lis))
}

// ---- load generator ----

// codeName is the canonical name of a status code (UNAUTHENTICATED, ...), as
// the Node load generator reports them.
func codeName(c codes.Code) string {
	names := []string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
		"PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
		"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}
	if int(c) < len(names) {
		return names[c]
	}
	return fmt.Sprintf("CODE_%d", c)
}

type job struct {
	Target   string `json:"target"`
	RootPem  string `json:"rootPem"`
	Requests []struct {
		Csr         string `json:"csr"`
		Token       string `json:"token"`
		ValiditySec int64  `json:"validitySec"`
	} `json:"requests"`
	Mode        string  `json:"mode"`
	Total       int     `json:"total"`
	DeadlineMs  int     `json:"deadlineMs"`
	Concurrency int     `json:"concurrency"`
	RatePerSec  float64 `json:"ratePerSec"`
	DurationMs  int     `json:"durationMs"`
	Channels    int     `json:"channels"`
	// TraceFile, when set, receives one line per call: "sentAtMs latencyMs" from the start of the run.
	TraceFile string `json:"traceFile"`
}

func loadgen(args []string) {
	if len(args) != 1 {
		must(errors.New("usage: grpc-go loadgen JOB_JSON"))
	}
	raw, err := os.ReadFile(args[0])
	must(err)
	var j job
	must(json.Unmarshal(raw, &j))
	if j.Channels < 1 {
		j.Channels = 1
	}
	if j.DeadlineMs == 0 {
		j.DeadlineMs = 30_000
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(j.RootPem)) {
		must(errors.New("no root certificate in the job"))
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})
	conns := make([]*grpc.ClientConn, j.Channels)
	for i := range conns {
		conns[i], err = grpc.Dial(j.Target, grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		must(err)
	}
	reqs := make([][]byte, len(j.Requests))
	mds := make([]metadata.MD, len(j.Requests))
	for i, r := range j.Requests {
		v := r.ValiditySec
		if v == 0 {
			v = 3600
		}
		reqs[i] = encodeRequest(r.Csr, v)
		mds[i] = metadata.Pairs("authorization", "Bearer "+r.Token)
	}

	var mu sync.Mutex
	var next, done, errs int
	codesSeen := map[string]int{}
	var lat []float64
	var trace []string
	var start time.Time
	one := func() {
		mu.Lock()
		i := next
		next++
		mu.Unlock()
		ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), mds[i%len(mds)]), time.Duration(j.DeadlineMs)*time.Millisecond)
		defer cancel()
		out := &frame{}
		t0 := time.Now()
		err := conns[i%len(conns)].Invoke(ctx, method, &frame{b: reqs[i%len(reqs)]}, out)
		if err == nil {
			if n, e := countChain(out.b); e != nil || n < 2 {
				err = status.Error(codes.Internal, "loadgen: response without a chain")
			}
		}
		ms := float64(time.Since(t0).Microseconds()) / 1000
		mu.Lock()
		if err == nil {
			done++
		} else {
			errs++
			codesSeen[codeName(status.Code(err))]++
		}
		lat = append(lat, ms)
		if j.TraceFile != "" && !start.IsZero() {
			trace = append(trace, fmt.Sprintf("%.3f %.3f", float64(t0.Sub(start).Microseconds())/1000, ms))
		}
		mu.Unlock()
	}
	// Warm up the connections (TLS handshakes) before the clock starts.
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() { defer wg.Done(); one() }()
	}
	wg.Wait()
	next, done, errs, lat, codesSeen = 0, 0, 0, lat[:0], map[string]int{}
	fmt.Println("READY")
	bufio.NewReader(os.Stdin).ReadString('\n')

	start = time.Now()
	end := start.Add(time.Duration(j.DurationMs) * time.Millisecond)
	switch j.Mode {
	case "burst":
		for k := 0; k < j.Total; k++ {
			wg.Add(1)
			go func() { defer wg.Done(); one() }()
		}
	case "closed":
		for c := 0; c < j.Concurrency; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					one()
				}
			}()
		}
	default: // open: arrivals at ratePerSec whatever the answers do
		interval := time.Duration(float64(time.Second) / j.RatePerSec)
		for due := start; due.Before(end); due = due.Add(interval) {
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
			wg.Add(1)
			go func() { defer wg.Done(); one() }()
		}
	}
	wg.Wait()
	elapsed := float64(time.Since(start).Microseconds()) / 1000
	if j.TraceFile != "" {
		must(os.WriteFile(j.TraceFile, []byte(strings.Join(trace, "\n")+"\n"), 0o644))
	}
	sort.Float64s(lat)
	step := (len(lat) + 19_999) / 20_000
	if step < 1 {
		step = 1
	}
	sample := []float64{}
	for i := 0; i < len(lat); i += step {
		sample = append(sample, lat[i])
	}
	out, _ := json.Marshal(map[string]interface{}{"done": done, "errors": errs, "codes": codesSeen, "latenciesMs": sample, "elapsedMs": elapsed})
	fmt.Println(string(out))
}

func main() {
	if len(os.Args) < 2 {
		must(errors.New("usage: grpc-go server|loadgen ..."))
	}
	switch os.Args[1] {
	case "server":
		serve(os.Args[2:])
	case "loadgen":
		loadgen(os.Args[2:])
	default:
		must(errors.New("unknown mode " + os.Args[1]))
	}
}
