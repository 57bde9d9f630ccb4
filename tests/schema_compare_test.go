package tests

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// assertSameSchema compares the definitions of tables on both sides, as
// pg_dump --schema-only prints them (columns, defaults, NOT NULL, indexes,
// constraints, triggers, policies), normalised: comments, session settings
// and ownership are left out, since the target's owner may be another role
// by design. Independent of the tool's own catalog reads. It does nothing
// when the local pg_dump is older than the source.
func assertSameSchema(t *testing.T, src, dst *pgtest.Cluster, db string, tables ...string) {
	t.Helper()
	if why := pgDumpTooOld(t, src); why != "" {
		t.Logf("schema not compared: %s", why)
		return
	}
	want, got := schemaDump(t, src, db, tables), schemaDump(t, dst, db, tables)
	if want != got {
		t.Errorf("schemas differ\nsource:\n%s\ntarget:\n%s", want, got)
	}
}

// cleanupAndCompareSchema ends the migration with cleanup, which puts back
// what the apply mode changed on the target's tables for its duration
// (identity columns, triggers, deferrable foreign keys), then compares the
// tables' definitions.
func cleanupAndCompareSchema(t *testing.T, src, dst *pgtest.Cluster, db string, tables ...string) {
	t.Helper()
	if res := runCLI(t, nil, "cleanup", "--yes", "--source", src.URL("postgres", "", db), "--target", dst.URL("postgres", "", db)); res.Code != 0 {
		t.Fatalf("cleanup: exit %d: %s", res.Code, res.Stderr)
	}
	assertSameSchema(t, src, dst, db, tables...)
}

// pgDumpTooOld says why the local pg_dump cannot dump src (older than the
// server), or "" when it can.
func pgDumpTooOld(t *testing.T, src *pgtest.Cluster) string {
	t.Helper()
	major, _ := strconv.Atoi(src.QueryString("postgres", "SELECT current_setting('server_version_num')::int / 10000"))
	out, err := exec.Command("pg_dump", "--version").Output()
	if err != nil {
		t.Fatalf("pg_dump --version: %v", err)
	}
	fields := strings.Fields(string(out))
	dumpMajor, _ := strconv.Atoi(strings.SplitN(fields[len(fields)-1], ".", 2)[0])
	if dumpMajor < major {
		return fmt.Sprintf("pg_dump %d cannot dump PostgreSQL %d", dumpMajor, major)
	}
	return ""
}

// needPgDump skips a test that copies a table again (or runs init): that
// needs a pg_dump at least as new as the source.
func needPgDump(t *testing.T, src *pgtest.Cluster) {
	t.Helper()
	if why := pgDumpTooOld(t, src); why != "" {
		t.Skipf("copying a table needs pg_dump: %s", why)
	}
}

func schemaDump(t *testing.T, c *pgtest.Cluster, db string, tables []string) string {
	t.Helper()
	args := []string{"--schema-only", "--no-owner", "--no-privileges", "--no-comments", "-d", c.DSN(db)}
	for _, tbl := range tables {
		args = append(args, "-t", tbl)
	}
	out, err := exec.Command("pg_dump", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_dump %s: %v\n%s", db, err, out)
	}
	var kept []string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case line == "", strings.HasPrefix(line, "--"), strings.HasPrefix(line, "SET "),
			strings.HasPrefix(line, "SELECT pg_catalog.set_config"), strings.HasPrefix(line, `\restrict`), strings.HasPrefix(line, `\unrestrict`):
			continue
		}
		kept = append(kept, line)
	}
	return fmt.Sprintln(strings.Join(kept, "\n"))
}
