package tests

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// serverCert issues a server certificate for localhost and 127.0.0.1,
// returned PEM encoded with its key.
func (ca *testCA) serverCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// TestTLSVerifyFull runs a migration over TLS with certificates from a test
// CA and sslmode=verify-full, with the mover role refused any connection
// without TLS: validate, init and sync pass and the tables end equal. The
// same connection checked against another CA, or reached by an address the
// certificate does not name, fails in one line that says why.
func TestTLSVerifyFull(t *testing.T) {
	ca := newTestCA(t, "seren test CA")
	cert, key := ca.serverCert(t)
	opts := pgtest.Options{ServerCert: cert, ServerKey: key,
		// 127.0.0.2 reaches the same server under a name its certificate lacks.
		Settings: []string{"listen_addresses = '127.0.0.1,127.0.0.2'"}}
	var src, dst *pgtest.Cluster
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); src = pgtest.Start(t, opts) }()
	go func() { defer wg.Done(); dst = pgtest.Start(t, opts) }()
	wg.Wait()
	if src == nil || dst == nil {
		t.FailNow()
	}
	setUpMover(src, dst, moverPW)
	for _, c := range []*pgtest.Cluster{src, dst} {
		refusePlaintext(t, c, "mover")
	}
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	otherCA := filepath.Join(dir, "other-ca.pem")
	pwFile := filepath.Join(dir, "pw")
	for path, data := range map[string][]byte{caFile: ca.pem, otherCA: newTestCA(t, "another CA").pem, pwFile: []byte(moverPW + "\n")} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	url := func(host string, c *pgtest.Cluster, root string) string {
		return fmt.Sprintf("postgres://mover@%s:%d/app?sslmode=verify-full&sslrootcert=%s", host, c.Port, root)
	}
	run := func(t *testing.T, args ...string) Result {
		t.Helper()
		return runCLI(t, nil, append(args, "--source-password-file", pwFile, "--target-password-file", pwFile)...)
	}

	t.Run("verify-full passes", func(t *testing.T) {
		source, target := url("127.0.0.1", src, caFile), url("localhost", dst, caFile)
		for _, args := range [][]string{
			{"validate", "--source", source, "--target", target},
			{"init", "--yes", "--source", source, "--target", target},
		} {
			if res := run(t, args...); res.Code != 0 {
				t.Fatalf("%s: exit code %d\nstdout:\n%s\nstderr:\n%s", args[0], res.Code, res.Stdout, res.Stderr)
			}
		}
		src.Exec("app", `INSERT INTO orders SELECT g, 'late' FROM generate_series(101, 150) g; UPDATE orders SET note = 'u' WHERE id <= 10`)
		if res := run(t, "sync", "--catch-up", "--source", source, "--target", target); res.Code != 0 {
			t.Fatalf("sync --catch-up: exit code %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
		}
		assertSameTables(t, src, dst, "app", "orders")
	})

	fails := []struct {
		name, source, target string
		want                 []string
	}{
		{"source checked against another CA", url("127.0.0.1", src, otherCA), url("127.0.0.1", dst, caFile),
			[]string{"connect to source", "certificate signed by unknown authority"}},
		{"target checked against another CA", url("127.0.0.1", src, caFile), url("localhost", dst, otherCA),
			[]string{"connect to target", "certificate signed by unknown authority"}},
		{"target reached by a name its certificate lacks", url("127.0.0.1", src, caFile), url("127.0.0.2", dst, caFile),
			[]string{"connect to target", "certificate is valid for", "not 127.0.0.2"}},
	}
	for _, tc := range fails {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, "validate", "--source", tc.source, "--target", tc.target)
			if res.Code != 2 {
				t.Errorf("exit code = %d, want 2\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
			}
			line := errorLine(t, res)
			t.Log(line)
			for _, want := range tc.want {
				if !strings.Contains(line, want) {
					t.Errorf("error lacks %q: %s", want, line)
				}
			}
			assertNoSecret(t, res, moverPW)
		})
	}
}

// refusePlaintext makes the server refuse role's connections without TLS,
// so a test that passes proves the tool used TLS on every connection
// (including pg_dump's and the replication connection).
func refusePlaintext(t *testing.T, c *pgtest.Cluster, role string) {
	t.Helper()
	path := filepath.Join(c.DataDir, "pg_hba.conf")
	hba, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rule := fmt.Sprintf("hostnossl all %[1]s 0.0.0.0/0 reject\nhostnossl replication %[1]s 0.0.0.0/0 reject\n", role)
	if err := os.WriteFile(path, append([]byte(rule), hba...), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Exec("postgres", "SELECT pg_reload_conf()")
}

// TestTLSRequiredByTheClientOnly asks for TLS (sslmode=require) from a server
// that has none: a configuration error, exit 2, in one line that says the
// server has no TLS and what to change, for every command that connects;
// also when an earlier address of the connection string refused the
// connection (the server that answered is the cause, not the one that did
// not). A refused connection alone stays a runtime error, exit 3, named once
// with every address tried.
func TestTLSRequiredByTheClientOnly(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	closed := closedPort(t)
	noTLS := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=require", srv.Port)
	fallback := fmt.Sprintf("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres sslmode=require", closed, srv.Port)
	target := srv.URL("postgres", "", "postgres")
	for _, c := range []struct {
		name, source string
		args         []string
	}{
		{"validate", noTLS, []string{"validate"}},
		{"init", noTLS, []string{"init", "--yes"}},
		{"sync", noTLS, []string{"sync", "--catch-up"}},
		{"status", noTLS, []string{"status"}},
		{"verify", noTLS, []string{"verify"}},
		{"validate, first address refused", fallback, []string{"validate"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := runCLI(t, nil, append(c.args, "--source", c.source, "--target", target)...)
			if res.Code != 2 {
				t.Errorf("exit code = %d, want 2\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
			}
			line := errorLine(t, res)
			for _, want := range []string{"connect to source", "does not accept TLS", "sslmode=prefer"} {
				if !strings.Contains(line, want) {
					t.Errorf("error lacks %q: %s", want, line)
				}
			}
			if strings.Contains(line, "connection refused") {
				t.Errorf("error names the address that did not answer instead of the server that did: %s", line)
			}
		})
	}
	t.Run("refused at two addresses", func(t *testing.T) {
		other := closedPort(t)
		source := fmt.Sprintf("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres", closed, other)
		res := runCLI(t, nil, "validate", "--source", source, "--target", target)
		if res.Code != 3 {
			t.Errorf("exit code = %d, want 3\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
		}
		line := errorLine(t, res)
		want := fmt.Sprintf("connection refused at 127.0.0.1:%d, 127.0.0.1:%d", closed, other)
		if !strings.HasSuffix(line, want) || strings.Count(line, "refused") != 1 {
			t.Errorf("error = %s, want it to end %q, saying refused once", line, want)
		}
	})
}
