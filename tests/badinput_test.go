package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// assertOneLineError checks that stderr is exactly one "error: ..." line,
// after the warnings about passwords given on the command line.
func assertOneLineError(t *testing.T, res Result) {
	t.Helper()
	msg := strings.TrimRight(res.Stderr, "\n")
	for _, w := range passwordWarnings(res.Stderr) {
		msg = strings.TrimPrefix(msg, w+"\n")
	}
	if !strings.HasPrefix(msg, "error: ") || strings.Contains(msg, "\n") {
		t.Errorf("stderr is not one error line:\n%s", res.Stderr)
	}
}

// assertNoSecret checks that no password reached stdout or stderr.
func assertNoSecret(t *testing.T, res Result, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(res.Stdout, s) || strings.Contains(res.Stderr, s) {
			t.Errorf("password %q appears in the output:\nstdout:\n%s\nstderr:\n%s", s, res.Stdout, res.Stderr)
		}
	}
}

// TestBadInput runs the binary with each kind of bad input: every one is a
// usage or configuration error (exit code 2) told in one line, and no
// password given on the command line shows up in the output.
func TestBadInput(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	const pw, wrongPW = "Right-Pw-8841", "Wrong-Pw-3307"
	src.CreateRole("app_user", pw, "REPLICATION")
	dst.CreateRole("app_user", pw, "CREATEDB")
	src.Exec("postgres", "CREATE DATABASE app OWNER app_user")
	src.Exec("app", "SET ROLE app_user; CREATE TABLE orders (id int PRIMARY KEY)")
	source := src.URL("app_user", pw, "app")
	target := dst.URL("app_user", pw, "app")

	cases := []struct {
		name string
		args []string
		want string // in the error line
	}{
		{"malformed URL", []string{"--source", "postgres://app_user:" + pw + "@127.0.0.1:notaport/app", "--target", target}, "--source"},
		{"malformed target URL", []string{"--source", source, "--target", "postgres://app_user:" + pw + "@[::1/app"}, "--target"},
		{"unknown host", []string{"--source", "postgres://app_user:" + pw + "@no-such-host.invalid/app", "--target", target}, `unknown host "no-such-host.invalid"`},
		{"wrong source password", []string{"--source", src.URL("app_user", wrongPW, "app"), "--target", target}, "password authentication failed"},
		{"wrong target password", []string{"--source", source, "--target", dst.URL("app_user", wrongPW, "app")}, "password authentication failed"},
		{"nonexistent database", []string{"--source", src.URL("app_user", pw, "nosuchdb"), "--target", target}, "nosuchdb"},
		{"source equal to target", []string{"--source", source, "--target", source}, "source and target are the same database"},
		{"source equal to target, all databases", []string{"--source", src.URL("app_user", pw, "postgres"), "--target", src.DSN("postgres")}, "source and target are the same database"},
		{"table that does not exist", []string{"--source", source, "--target", target, "--include-tables", "app.public.nosuchtable"}, "nosuchtable"},
		{"excluded table that does not exist", []string{"--source", source, "--target", target, "--exclude-tables", "app.nosuchtable"}, "--exclude-tables app.nosuchtable matches no table"},
		{"database that does not exist", []string{"--source", src.URL("app_user", pw, "postgres"), "--target", target, "--include-databases", "nosuchdb"}, `--include-databases nosuchdb matches no database on the source`},
		{"table pattern that matches nothing", []string{"--source", source, "--target", target, "--include-tables", "app.nosuch_*"}, "--include-tables app.nosuch_* matches no table"},
		{"table in another schema", []string{"--source", source, "--target", target, "--include-tables", "app.other.orders"}, "did you mean app.public.orders?"},
		{"include and exclude that leave no database", []string{"--source", source, "--target", target, "--include-databases", "app", "--exclude-databases", "a*"}, "the filters select no database"},
		{"interactive without a terminal", []string{"--source", source, "--target", target, "--interactive"}, "--include-databases"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, format := range [][]string{nil, {"--json"}} {
				args := append(append([]string{"validate"}, tc.args...), format...)
				res := runCLI(t, nil, args...)
				if res.Code != 2 {
					t.Errorf("%v: exit code = %d, want 2\nstdout:\n%s\nstderr:\n%s", format, res.Code, res.Stdout, res.Stderr)
				}
				assertOneLineError(t, res)
				if !strings.Contains(res.Stderr, tc.want) {
					t.Errorf("%v: error lacks %q: %s", format, tc.want, res.Stderr)
				}
				assertNoSecret(t, res, pw, wrongPW)
			}
		})
	}

	// The same input through the environment, as a systemd unit gives it.
	t.Run("wrong password from the environment", func(t *testing.T) {
		res := runCLI(t, []string{"SEREN_SOURCE=" + src.URL("app_user", wrongPW, "app"), "SEREN_TARGET=" + target}, "validate", "--json")
		if res.Code != 2 {
			t.Errorf("exit code = %d, want 2; stderr: %s", res.Code, res.Stderr)
		}
		assertOneLineError(t, res)
		assertNoSecret(t, res, pw, wrongPW)
	})

	// Numeric flags that make no sense are usage errors, not silently
	// replaced by defaults.
	t.Run("sync with invalid numbers", func(t *testing.T) {
		for _, flag := range [][]string{{"--max-batch-changes", "0"}, {"--max-batch-changes", "-5"}, {"--status-interval", "0s"},
			{"--max-batch-delay", "-1s"}, {"--max-retry-delay", "0s"}, {"--sequence-interval", "-1m"}} {
			res := runCLI(t, nil, append([]string{"sync", "--source", source, "--target", target}, flag...)...)
			if res.Code != 2 || !strings.Contains(res.Stderr, flag[0]) {
				t.Errorf("sync %v: exit %d, want 2 naming the flag: %s", flag, res.Code, res.Stderr)
			}
			assertOneLineError(t, res)
		}
	})

	// sync stops at once on a login the target refuses, instead of retrying.
	t.Run("sync with a wrong target password", func(t *testing.T) {
		src.Exec("app", `CREATE PUBLICATION seren_replicator_pub FOR TABLE orders`)
		src.Exec("app", `SELECT pg_create_logical_replication_slot('seren_app', 'pgoutput')`)
		defer src.Exec("app", `DROP PUBLICATION seren_replicator_pub`)
		defer src.Exec("app", `SELECT pg_drop_replication_slot('seren_app')`)
		res := runCLIContext(t, context.Background(), 20*time.Second, nil, "sync", "--catch-up", "--source", source, "--target", dst.URL("app_user", wrongPW, "app"))
		if res.Code != 2 || !strings.Contains(res.Stderr, "password authentication failed") {
			t.Errorf("exit code = %d, want 2 naming the refused login; stderr: %s", res.Code, res.Stderr)
		}
		assertNoSecret(t, res, pw, wrongPW)
	})

	// A run that succeeds prints connection details in its report; the
	// passwords must not be among them, in either format.
	t.Run("no password in a report", func(t *testing.T) {
		for _, format := range [][]string{nil, {"--json"}} {
			res := runCLI(t, nil, append([]string{"validate", "--source", source, "--target", target}, format...)...)
			if res.Code != 0 {
				t.Errorf("%v: exit code = %d, want 0\n%s\n%s", format, res.Code, res.Stdout, res.Stderr)
			}
			assertNoSecret(t, res, pw)
		}
	})
}
