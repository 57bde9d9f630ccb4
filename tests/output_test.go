package tests

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// assertStreams checks one run's output as an operator reads it piped into
// a file: results on stdout, only log lines on stderr, no log line on
// stdout, and no terminal escape codes on either.
func assertStreams(t *testing.T, what string, res Result) {
	t.Helper()
	for name, out := range map[string]string{"stdout": res.Stdout, "stderr": res.Stderr} {
		if strings.Contains(out, "\x1b") {
			t.Errorf("%s: escape codes on %s, which is not a terminal: %q", what, name, out)
		}
	}
	for _, line := range strings.Split(res.Stdout, "\n") {
		if strings.HasPrefix(line, "time=") || strings.Contains(line, " level=") {
			t.Errorf("%s: a log line on stdout: %s", what, line)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(res.Stderr), "\n") {
		if line != "" && !strings.HasPrefix(line, "time=") {
			t.Errorf("%s: stderr holds something other than log lines: %q", what, line)
		}
	}
}

// TestOutputForOperators runs the commands of a migration piped, as a
// script or a CI job runs them, and reads their output: streams kept apart
// and free of escape codes, counts in the right number, the estimate's
// rates labelled as an assumption, cleanup naming the target database by
// its own name (here not the source's), a warning of status in one sentence.
func TestOutputForOperators(t *testing.T) {
	src, dst := pgtestPair(t)
	src.Exec("postgres", "CREATE DATABASE one")
	src.Exec("postgres", "CREATE DATABASE none")
	src.Exec("one", "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
	conn := []string{"--source", src.URL("postgres", "", "one"), "--target", dst.URL("postgres", "", "one_copy")}

	t.Run("validate with one table and with none", func(t *testing.T) {
		res := runCLI(t, nil, append([]string{"validate"}, conn...)...)
		assertStreams(t, "validate", res)
		for _, want := range []string{"may read the 1 selected table", "the 1 table has a primary key"} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("validate lacks %q:\n%s", want, res.Stdout)
			}
		}
		res = runCLI(t, nil, "validate", "--source", src.URL("postgres", "", "none"), "--target", dst.URL("postgres", "", "none"))
		if !strings.Contains(res.Stdout, "no table is selected") || strings.Contains(res.Stdout, "all 0") {
			t.Errorf("validate of a database without tables:\n%s", res.Stdout)
		}
	})

	t.Run("init", func(t *testing.T) {
		res := runCLI(t, nil, append([]string{"init", "--yes", "--jobs", "1"}, conn...)...)
		if res.Code != 0 {
			t.Fatalf("exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
		}
		assertStreams(t, "init", res)
		for _, want := range []string{"assumes", "not measured on these servers", "Using 1 job.", "1 table (1 piece), 1 row,"} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("init output lacks %q:\n%s", want, res.Stdout)
			}
		}
		if strings.Contains(res.Stdout, "measured with") {
			t.Errorf("init still claims a measured estimate:\n%s", res.Stdout)
		}
	})

	t.Run("sync --catch-up of one transaction", func(t *testing.T) {
		src.Exec("one", "INSERT INTO t VALUES (2, 'b')")
		res := runCLI(t, nil, append([]string{"sync", "--catch-up"}, conn...)...)
		if res.Code != 0 {
			t.Fatalf("exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
		}
		assertStreams(t, "sync --catch-up", res)
		if !strings.Contains(res.Stdout, ": 1 transaction, 1 change in 1 batch;") {
			t.Errorf("catch-up summary:\n%s", res.Stdout)
		}
	})

	t.Run("status and verify", func(t *testing.T) {
		for _, cmd := range []string{"status", "verify"} {
			res := runCLI(t, nil, append([]string{cmd}, conn...)...)
			if res.Code != 0 {
				t.Fatalf("%s: exit %d\n%s\n%s", cmd, res.Code, res.Stdout, res.Stderr)
			}
			assertStreams(t, cmd, res)
		}
	})

	t.Run("cleanup names each side's database", func(t *testing.T) {
		res := runCLI(t, nil, append([]string{"cleanup", "--yes"}, conn...)...)
		if res.Code != 0 {
			t.Fatalf("exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
		}
		assertStreams(t, "cleanup", res)
		for _, want := range []string{"source one: dropped replication slot", "target one_copy: dropped checkpoint schema"} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("cleanup output lacks %q:\n%s", want, res.Stdout)
			}
		}
		if strings.Contains(res.Stdout, "target one:") {
			t.Errorf("cleanup labels the target with the source's database name:\n%s", res.Stdout)
		}
	})

	t.Run("status warning without pg_read_all_stats", func(t *testing.T) { statusWithoutStatsRole(t, src, dst) })
}

// TestDemoReadsAsAWalkthrough runs make demo's program piped: it succeeds,
// and its output is the commands and what they print, with no log lines
// between the tables and no escape codes.
func TestDemoReadsAsAWalkthrough(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./demo", "-bin", binary)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	text := string(out)
	if strings.Contains(text, "\x1b") {
		t.Errorf("escape codes in piped output:\n%q", text)
	}
	if strings.Contains(text, "level=INFO") || strings.Contains(text, "time=") {
		t.Errorf("log lines between the demo's tables:\n%s", text)
	}
	for _, want := range []string{"== validate", "== init", "Init is complete", "== sync --catch-up", "caught up to", "all tables match"} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
}

// statusWithoutStatsRole runs status as a role that may read the data but
// not other sessions' replication statistics, while the daemon streams and
// a batch waits on a lock on the target: status cannot tell whether changes
// are pending, and says so in one plain sentence with the grant that fixes
// it, not in parentheses nested in parentheses.
func statusWithoutStatsRole(t *testing.T, src, dst *pgtest.Cluster) {
	const db = "watch"
	prepareStreaming(t, src, dst, db, `CREATE TABLE t (id int PRIMARY KEY);`, "public.t")
	const pw = "Watch-Pw-31"
	for _, c := range []*pgtest.Cluster{src, dst} {
		c.CreateRole("watcher", pw)
		c.Exec("postgres", "GRANT pg_read_all_data TO watcher")
	}
	startSync(t, nil, syncArgs(src, dst, db)...)
	eventually(t, 30*time.Second, "the daemon streaming", func() bool {
		return src.QueryString(db, "SELECT count(*) FROM pg_replication_slots WHERE active") == "1"
	})
	lock := dst.Connect(db)
	tx, err := lock.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), "LOCK TABLE t IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	src.Exec(db, "INSERT INTO t VALUES (1)")
	var res Result
	eventually(t, 30*time.Second, "status seeing the pending change", func() bool {
		res = runCLI(t, []string{"PGPASSWORD=" + pw}, "status", "--source", src.URL("watcher", "", db), "--target", dst.URL("watcher", "", db))
		return strings.Contains(res.Stdout+res.Stderr, "could not tell whether changes are pending")
	})
	out := res.Stdout + res.Stderr
	if !strings.Contains(out, "not visible to this role: grant it pg_read_all_stats") {
		t.Errorf("status does not name the grant:\n%s", out)
	}
	if regexp.MustCompile(`\([^()]*\(`).MatchString(out) {
		t.Errorf("status nests parentheses:\n%s", out)
	}
	assertNoSecret(t, res, pw)
}
