package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// moverPW is the password of the mover role on both clusters of the tests in
// this file; each test greps every output for it.
const moverPW = "Mover-Pw-6b1e94"

// passwordPair starts a source and a target where the role mover logs in
// with moverPW (SCRAM): on the source it has REPLICATION and owns the
// database app and its table, on the target it may create databases.
func passwordPair(t *testing.T) (src, dst *pgtest.Cluster) {
	t.Helper()
	src, dst = pgtest.StartPair(t)
	setUpMover(src, dst, moverPW)
	return src, dst
}

// setUpMover creates the role mover with password pw on both clusters, and
// on the source the database app it owns, with a table of 100 rows.
func setUpMover(src, dst *pgtest.Cluster, pw string) {
	src.CreateRole("mover", pw, "REPLICATION")
	dst.CreateRole("mover", pw, "CREATEDB")
	src.Exec("postgres", "CREATE DATABASE app OWNER mover")
	src.Exec("app", `SET ROLE mover; CREATE TABLE orders (id int PRIMARY KEY, note text);
		INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 100) g`)
}

// moverURL is a URL for mover without a password and without sslmode, so
// libpq's default (prefer) applies.
func moverURL(c *pgtest.Cluster, password, db string) string {
	u := "mover"
	if password != "" {
		u += ":" + password
	}
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s", u, c.Port, db)
}

// writeSecret writes a file only its owner may read and returns its path.
func writeSecret(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// errorLine returns the one "error: " line of stderr and fails the test
// unless stderr is exactly that line.
func errorLine(t *testing.T, res Result) string {
	t.Helper()
	msg := strings.TrimRight(res.Stderr, "\n")
	if !strings.HasPrefix(msg, "error: ") || strings.Contains(msg, "\n") {
		t.Errorf("stderr is not one error line:\n%s", res.Stderr)
	}
	return msg
}

// warnings returns the lines of stderr that warn about a password on the
// command line.
func passwordWarnings(stderr string) []string {
	var out []string
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "process list") {
			out = append(out, line)
		}
	}
	return out
}

// TestConnectionErrors gives validate connection strings that fail in each
// common way, through the environment (so no warning about the command line
// joins the output): each failure is one line that names the side and the
// real cause, with the default sslmode (prefer) against a server without
// TLS, where pgconn's first attempt fails on TLS.
func TestConnectionErrors(t *testing.T) {
	src, dst := passwordPair(t)
	source, target := moverURL(src, moverPW, "app"), moverURL(dst, moverPW, "app")
	const wrongPW = "Wrong-Pw-2207"
	cases := []struct {
		name           string
		source, target string
		code           int
		want           []string // in the error line
	}{
		{"wrong source password", moverURL(src, wrongPW, "app"), target, 2,
			[]string{"connect to source mover@127.0.0.1:", `password authentication failed for user "mover"`}},
		{"wrong target password", source, moverURL(dst, wrongPW, "app"), 2,
			[]string{"connect to target mover@127.0.0.1:", `password authentication failed for user "mover"`}},
		{"no password for the source", moverURL(src, "", "app"), target, 2,
			[]string{"connect to source", "password authentication failed"}},
		{"missing source database", moverURL(src, moverPW, "nosuchdb"), target, 2,
			[]string{"connect to source", `database "nosuchdb" does not exist`}},
		{"unknown target host", source, "postgres://mover:" + moverPW + "@no-such-host.invalid/app", 2,
			[]string{"connect to target", `unknown host "no-such-host.invalid"`}},
		{"refused target port", source, fmt.Sprintf("postgres://mover:%s@127.0.0.1:%d/app", moverPW, closedPort(t)), 3,
			[]string{"connect to target", "connection refused"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := runCLI(t, []string{"SEREN_SOURCE=" + tc.source, "SEREN_TARGET=" + tc.target}, "validate")
			if res.Code != tc.code {
				t.Errorf("exit code = %d, want %d\nstdout:\n%s\nstderr:\n%s", res.Code, tc.code, res.Stdout, res.Stderr)
			}
			line := errorLine(t, res)
			t.Log(line)
			for _, want := range tc.want {
				if !strings.Contains(line, want) {
					t.Errorf("error lacks %q: %s", want, line)
				}
			}
			if strings.Contains(line, "TLS") || strings.Count(line, "connection refused") > 1 {
				t.Errorf("error shows a failed attempt that is not the cause: %s", line)
			}
			assertNoSecret(t, res, moverPW, wrongPW)
		})
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	addr := freeAddr(t)
	var port int
	if _, err := fmt.Sscanf(addr[strings.LastIndex(addr, ":")+1:], "%d", &port); err != nil {
		t.Fatal(err)
	}
	return port
}

// TestPasswordSources logs in with a password from each place it may come
// from other than the command line; validate passes with each, without the
// warning about passwords on the command line. A password given twice, an
// unreadable file and a wrong password in a file are one-line errors.
func TestPasswordSources(t *testing.T) {
	src, dst := passwordPair(t)
	source, target := moverURL(src, "", "app"), moverURL(dst, "", "app")
	pwFile := writeSecret(t, "pw", moverPW+"\n")
	pgpass := writeSecret(t, "pgpass", fmt.Sprintf("127.0.0.1:%d:*:mover:%s\n127.0.0.1:%d:*:mover:%s\n", src.Port, moverPW, dst.Port, moverPW))
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, ".pgpass"), []byte(fmt.Sprintf("*:*:*:mover:%s\n", moverPW)), 0o600); err != nil {
		t.Fatal(err)
	}
	both := []string{"--source", source, "--target", target}
	ok := []struct {
		name string
		env  []string
		args []string
	}{
		{"password file flags", nil, append([]string{"--source-password-file", pwFile, "--target-password-file", pwFile}, both...)},
		{"password file variables", []string{"SEREN_SOURCE_PASSWORD_FILE=" + pwFile, "SEREN_TARGET_PASSWORD_FILE=" + pwFile}, both},
		{"PGPASSFILE", []string{"PGPASSFILE=" + pgpass}, both},
		{"~/.pgpass", []string{"HOME=" + home}, both},
		{"PGPASSWORD", []string{"PGPASSWORD=" + moverPW}, both},
		{"password in the environment twins", []string{"SEREN_SOURCE=" + moverURL(src, moverPW, "app"), "SEREN_TARGET=" + moverURL(dst, moverPW, "app")}, nil},
		{"file overrides PGPASSWORD", []string{"PGPASSWORD=Stale-Pw-1"}, append([]string{"--source-password-file", pwFile, "--target-password-file", pwFile}, both...)},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			res := runCLI(t, tc.env, append([]string{"validate"}, tc.args...)...)
			if res.Code != 0 {
				t.Errorf("exit code = %d, want 0\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
			}
			if w := passwordWarnings(res.Stderr); len(w) != 0 {
				t.Errorf("warned about a password not on the command line:\n%s", strings.Join(w, "\n"))
			}
			assertNoSecret(t, res, moverPW)
		})
	}
	t.Run("status with password files", func(t *testing.T) {
		dst.Exec("postgres", "CREATE DATABASE app OWNER mover")
		defer dst.Exec("postgres", "DROP DATABASE app")
		res := runCLI(t, nil, append([]string{"status", "--json", "--source-password-file", pwFile, "--target-password-file", pwFile}, both...)...)
		// No migration yet: status reports a broken one (exit 1), which it
		// can only know after logging in to both sides.
		if res.Code != 1 || !strings.Contains(res.Stdout, `"app"`) {
			t.Errorf("exit code = %d, want 1 with a report on app\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
		}
		assertNoSecret(t, res, moverPW)
	})

	wrongFile := writeSecret(t, "wrong", "Wrong-Pw-5\n")
	bad := []struct {
		name string
		args []string
		want []string
	}{
		{"password in --source and a file", []string{"--source", moverURL(src, moverPW, "app"), "--target", target, "--source-password-file", pwFile},
			[]string{"--source", "--source-password-file"}},
		{"missing file", append([]string{"--target-password-file", filepath.Join(t.TempDir(), "nofile")}, both...),
			[]string{"--target-password-file", "no such file"}},
		{"empty file", append([]string{"--source-password-file", writeSecret(t, "empty", "")}, both...),
			[]string{"--source-password-file", "empty"}},
		{"wrong password in a file", append([]string{"--source-password-file", pwFile, "--target-password-file", wrongFile}, both...),
			[]string{"connect to target", "password authentication failed"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			res := runCLI(t, nil, append([]string{"validate"}, tc.args...)...)
			if res.Code != 2 {
				t.Errorf("exit code = %d, want 2\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
			}
			lines := strings.Split(strings.TrimRight(res.Stderr, "\n"), "\n")
			line := lines[len(lines)-1]
			if !strings.HasPrefix(line, "error: ") || len(lines)-len(passwordWarnings(res.Stderr)) != 1 {
				t.Errorf("stderr is not one error line (after warnings):\n%s", res.Stderr)
			}
			for _, want := range tc.want {
				if !strings.Contains(line, want) {
					t.Errorf("error lacks %q: %s", want, line)
				}
			}
			assertNoSecret(t, res, moverPW, "Wrong-Pw-5")
		})
	}
}

// TestPasswordOnCommandLineWarns checks the warning: one line per side
// whose password is in an argument, naming the flag, the process list and
// the alternatives, and none for passwords from elsewhere.
func TestPasswordOnCommandLineWarns(t *testing.T) {
	src, dst := passwordPair(t)
	withPW := []string{"--source", moverURL(src, moverPW, "app"), "--target", moverURL(dst, moverPW, "app")}
	res := runCLI(t, nil, append([]string{"validate"}, withPW...)...)
	if res.Code != 0 {
		t.Fatalf("exit code = %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	w := passwordWarnings(res.Stderr)
	if len(w) != 2 || !strings.Contains(w[0], "--source") || !strings.Contains(w[1], "--target") {
		t.Fatalf("want one warning for --source and one for --target, got:\n%s", res.Stderr)
	}
	for _, want := range []string{"ps", "--target-password-file", ".pgpass", "PGPASSWORD", "SEREN_TARGET"} {
		if !strings.Contains(w[1], want) {
			t.Errorf("warning lacks %q: %s", want, w[1])
		}
	}
	assertNoSecret(t, res, moverPW)

	// Only the side whose argument holds the password; keyword/value too.
	kv := fmt.Sprintf("host=127.0.0.1 port=%d user=mover password=%s dbname=app", dst.Port, moverPW)
	res = runCLI(t, []string{"SEREN_SOURCE=" + moverURL(src, moverPW, "app")}, "validate", "--target", kv, "--log-format", "json")
	if res.Code != 0 {
		t.Fatalf("exit code = %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if n := strings.Count(res.Stderr, `"level":"WARN"`); n != 1 || !strings.Contains(res.Stderr, "the password in --target") {
		t.Errorf("want one JSON warning, for --target:\n%s", res.Stderr)
	}
	assertNoSecret(t, res, moverPW)
}
