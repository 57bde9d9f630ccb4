package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// rlsForced reads, on the target, whether a table has FORCE ROW LEVEL
// SECURITY and how many row security holds the migration records for it.
func rlsForced(t *testing.T, dst *pgtest.Cluster, db, schema, table string) string {
	t.Helper()
	return dst.QueryString(db, `SELECT coalesce((SELECT relforcerowsecurity::text FROM pg_class WHERE oid = to_regclass(format('%I.%I', '`+schema+`', '`+table+`'))), 'absent')
		|| ' ' || (SELECT count(*) FROM seren_replicator.held WHERE kind = 'row security' AND schema_name = '`+schema+`' AND table_name = '`+table+`')`)
}

// A held (forced) table renamed on the source with --ddl-capture: the
// captured RENAME runs with FORCE given back, then the table must be held
// again under its new name (not looked up under the name the hold
// recorded, which the statement just changed).
func TestRLSAttackRenameHeldTableCaptured(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "rls", `CREATE TABLE t (id int PRIMARY KEY, who text)`, "public.t")
	target := ddlTarget(t, dst, "ordered", "rls", "TABLE t")
	source := src.URL("postgres", "", "rls")
	catchUp := func(step string, args ...string) {
		t.Helper()
		res := runCLI(t, nil, append([]string{"sync", "--catch-up", "--source", source, "--target", target, "--include-tables", "rls.public.*"}, args...)...)
		if res.Code != 0 {
			t.Fatalf("sync --catch-up %s: exit %d\n%s", step, res.Code, lastLines(res.Stderr, 6))
		}
	}
	src.Exec("rls", `INSERT INTO t VALUES (0, 'x')`)
	catchUp("with --ddl-capture", "--ddl-capture")
	for _, stmt := range []string{
		`CREATE POLICY mine ON t USING (who = current_user)`,
		`ALTER TABLE t ENABLE ROW LEVEL SECURITY`,
		`ALTER TABLE t FORCE ROW LEVEL SECURITY`,
		`INSERT INTO t VALUES (1, 'a'), (2, 'b')`,
	} {
		src.Exec("rls", stmt)
	}
	catchUp("after FORCE")
	if got := rlsForced(t, dst, "rls", "public", "t"); got != "false 1" {
		t.Fatalf("before the rename: %q, want held (false 1)", got)
	}
	src.Exec("rls", `ALTER TABLE t RENAME TO t2`)
	src.Exec("rls", `INSERT INTO t2 VALUES (3, 'c'); UPDATE t2 SET who = 'z' WHERE id = 1`)
	catchUp("after RENAME")
	assertSameTables(t, src, dst, "rls", "t2")
	if got := rlsForced(t, dst, "rls", "public", "t2"); got != "false 1" {
		t.Errorf("after the rename: %q, want t2 held (false 1)", got)
	}
	res := runCLI(t, nil, "cleanup", "--yes", "--source", source, "--target", dst.URL("postgres", "", "rls"))
	if res.Code != 0 {
		t.Fatalf("cleanup: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if got := dst.QueryString("rls", `SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.t2'::regclass`); got != "true" {
		t.Errorf("t2 forced after cleanup: %s, want true as on the source", got)
	}
}

// validate counts an owned forced target table as held for the migration:
// a forced table the source has not written since init must be held too,
// or verify and cutover (row_security = off, as its owner) cannot read it.
func TestRLSAttackVerifyUnwrittenForcedTable(t *testing.T) {
	src, _, source, target := rlsPair(t, `CREATE TABLE secrets (id int PRIMARY KEY, tenant int NOT NULL);
		INSERT INTO secrets SELECT g, g % 4 FROM generate_series(1, 100) g;
		ALTER TABLE secrets ENABLE ROW LEVEL SECURITY; ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
		CREATE POLICY one_tenant ON secrets USING (tenant = 0);
		CREATE TABLE plain (id int PRIMARY KEY);`)
	initRLS(t, source, target)
	src.Exec("rls", "INSERT INTO plain VALUES (1)")
	if res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("sync --catch-up: exit %d\n%s", res.Code, res.Stderr)
	}
	res := runCLI(t, nil, "verify", "--source", source, "--target", target)
	if res.Code != 0 {
		t.Errorf("verify with a forced table the source did not write since init: exit %d (validate passed), want 0\n%s\n%s",
			res.Code, res.Stdout, lastLines(res.Stderr, 3))
	}
	res = runCLI(t, []string{quickExit}, "cutover", "--yes", "--grace", "0s", "--source", source, "--target", target)
	if res.Code != 0 {
		t.Errorf("cutover with a forced table the source did not write since init: exit %d, want 0\n%s", res.Code, lastLines(res.Stderr, 3))
	}
}

// A partitioned table forced at its root and at one partition. The stream
// names the partitions, whose changes hold the forced partition; verify
// reads the root (row_security = off, as its owner), which must be held
// too, as validate says.
func TestRLSAttackPartitionedRootForced(t *testing.T) {
	src, dst, source, target := rlsPair(t, `CREATE TABLE p (id int PRIMARY KEY, tenant int NOT NULL) PARTITION BY RANGE (id);
		CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (1000);
		CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (1000) TO (2000);
		INSERT INTO p SELECT g, g % 4 FROM generate_series(1, 1999, 7) g;
		ALTER TABLE p ENABLE ROW LEVEL SECURITY; ALTER TABLE p FORCE ROW LEVEL SECURITY;
		ALTER TABLE p1 ENABLE ROW LEVEL SECURITY; ALTER TABLE p1 FORCE ROW LEVEL SECURITY;
		CREATE POLICY one_tenant ON p USING (tenant = 0);
		CREATE POLICY one_tenant1 ON p1 USING (tenant = 0);`)
	initRLS(t, source, target)
	src.Exec("rls", "INSERT INTO p VALUES (2, 0), (1003, 1); UPDATE p SET tenant = 3 WHERE id IN (8, 1009); DELETE FROM p WHERE id IN (15, 1016)")
	if res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("sync --catch-up: exit %d\n%s", res.Code, lastLines(res.Stderr, 5))
	}
	assertSameTables(t, src, dst, "rls", "p")
	res := runCLI(t, nil, "verify", "--source", source, "--target", target)
	if res.Code != 0 {
		t.Errorf("verify of a partitioned table forced at its root: exit %d (validate passed), want 0\n%s\n%s",
			res.Code, res.Stdout, lastLines(res.Stderr, 3))
	}
	if res := runCLI(t, nil, "cleanup", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("cleanup: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	want := src.QueryString("rls", `SELECT string_agg(relname || '=' || relforcerowsecurity, ' ' ORDER BY relname) FROM pg_class WHERE relname IN ('p', 'p1', 'p2')`)
	if got := dst.QueryString("rls", `SELECT string_agg(relname || '=' || relforcerowsecurity, ' ' ORDER BY relname) FROM pg_class WHERE relname IN ('p', 'p1', 'p2')`); got != want {
		t.Errorf("FORCE after cleanup: %s, want %s as on the source", got, want)
	}
}

// Replica mode does not need a superuser: a target role granted SET on
// session_replication_role (PostgreSQL 15) applies in replica mode, as the
// owner of its tables, still with row_security = off, so a forced table is
// held in replica mode too, as validate says.
func TestRLSAttackReplicaModeGrantedRole(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE rls")
	src.Exec("rls", `CREATE TABLE secrets (id int PRIMARY KEY, tenant int NOT NULL);
		INSERT INTO secrets SELECT g, g % 4 FROM generate_series(1, 100) g;
		ALTER TABLE secrets ENABLE ROW LEVEL SECURITY; ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
		CREATE POLICY one_tenant ON secrets USING (tenant = 0);`)
	dst.CreateRole("applier", "applier-pw")
	dst.Exec("postgres", "CREATE DATABASE rls OWNER applier")
	dst.Exec("postgres", "GRANT SET ON PARAMETER session_replication_role TO applier")
	source, target := src.URL("postgres", "", "rls"), dst.URL("applier", "applier-pw", "rls")
	if res := runCLI(t, nil, "init", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	v := runCLI(t, nil, "validate", "--source", source, "--target", target)
	hides := strings.Contains(v.Stdout, "would hide rows")
	src.Exec("rls", "INSERT INTO secrets VALUES (101, 1); UPDATE secrets SET tenant = 2 WHERE id = 2; DELETE FROM secrets WHERE id = 3")
	res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target)
	if !strings.Contains(res.Stderr, "apply_mode=\"replica") {
		t.Logf("sync did not apply in replica mode:\n%s", lastLines(res.Stderr, 5))
	}
	if res.Code != 0 {
		t.Fatalf("sync --catch-up in replica mode as a non-superuser owner: exit %d (validate said the target would hide rows: %v)\n%s", res.Code, hides, lastLines(res.Stderr, 3))
	}
	assertSameTables(t, src, dst, "rls", "secrets")
}

// A captured statement on a held table runs with FORCE given back; the
// check of the columns it added reads the table (is it empty?) with
// row_security = off as its owner, so the table must be held again before
// it, or a column with a sequence added to an emptied table is refused and
// left to the Relation messages, without its sequence.
func TestRLSAttackCapturedSerialOnEmptiedHeldTable(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "rls", `CREATE TABLE t (id int PRIMARY KEY, who text)`, "public.t")
	target := ddlTarget(t, dst, "ordered", "rls", "TABLE t")
	source := src.URL("postgres", "", "rls")
	catchUp := func(step string, args ...string) Result {
		t.Helper()
		res := runCLI(t, nil, append([]string{"sync", "--catch-up", "--source", source, "--target", target, "--include-tables", "rls.public.t"}, args...)...)
		if res.Code != 0 {
			t.Fatalf("sync --catch-up %s: exit %d\n%s", step, res.Code, lastLines(res.Stderr, 6))
		}
		return res
	}
	src.Exec("rls", `INSERT INTO t VALUES (0, 'x')`)
	catchUp("with --ddl-capture", "--ddl-capture")
	for _, stmt := range []string{
		`CREATE POLICY mine ON t USING (who = current_user)`,
		`ALTER TABLE t ENABLE ROW LEVEL SECURITY`,
		`ALTER TABLE t FORCE ROW LEVEL SECURITY`,
		`INSERT INTO t VALUES (1, 'a')`,
	} {
		src.Exec("rls", stmt)
	}
	catchUp("after FORCE")
	if got := rlsForced(t, dst, "rls", "public", "t"); got != "false 1" {
		t.Fatalf("before the new column: %q, want held (false 1)", got)
	}
	src.Exec("rls", `DELETE FROM t`)
	src.Exec("rls", `ALTER TABLE t ADD COLUMN n serial`)
	src.Exec("rls", `INSERT INTO t (id, who) VALUES (5, 'e')`)
	res := catchUp("after ADD COLUMN serial")
	for _, line := range strings.Split(res.Stderr, "\n") {
		if strings.Contains(line, "not applied") {
			t.Errorf("captured ADD COLUMN serial on an emptied table refused: %s", line)
		}
	}
	assertSameTables(t, src, dst, "rls", "t")
	const seqs = `SELECT coalesce(string_agg(relname, ',' ORDER BY relname), '') FROM pg_class WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace`
	if got, want := dst.QueryString("rls", seqs), src.QueryString("rls", seqs); got != want {
		t.Errorf("sequences on the target: %q, want %q as on the source", got, want)
	}
}

// A forced table created on the source after init joins the migration
// through its own copy (pg_dump -t, FORCE in its definition): every row
// arrives, changes after the join apply to it held, and cleanup forces it
// again.
func TestRLSAttackForcedTableJoinsMidMigration(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	needPgDump(t, src)
	src.Exec("postgres", "CREATE DATABASE rls")
	src.Exec("rls", `CREATE TABLE plain (id int PRIMARY KEY)`)
	dst.CreateRole("applier", "applier-pw")
	dst.Exec("postgres", "CREATE DATABASE rls OWNER applier")
	source, target := src.URL("postgres", "", "rls"), dst.URL("applier", "applier-pw", "rls")
	if res := runCLI(t, nil, "init", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("rls", `CREATE TABLE secrets (id int PRIMARY KEY, tenant int NOT NULL);
		INSERT INTO secrets SELECT g, g % 4 FROM generate_series(1, 100) g;
		ALTER TABLE secrets ENABLE ROW LEVEL SECURITY; ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
		CREATE POLICY one_tenant ON secrets USING (tenant = 0);
		INSERT INTO plain VALUES (1)`)
	for i, step := range []string{"the join", "changes after the join"} {
		if i == 1 {
			src.Exec("rls", "INSERT INTO secrets VALUES (101, 1); UPDATE secrets SET tenant = 2 WHERE id = 2; DELETE FROM secrets WHERE id = 3")
		}
		if res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target); res.Code != 0 {
			t.Fatalf("sync --catch-up for %s: exit %d\n%s", step, res.Code, lastLines(res.Stderr, 4))
		}
		assertSameTables(t, src, dst, "rls", "secrets")
	}
	if got := rlsForced(t, dst, "rls", "public", "secrets"); got != "false 1" {
		t.Errorf("joined forced table while sync runs: %q, want held (false 1)", got)
	}
	if res := runCLI(t, nil, "cleanup", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("cleanup: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if got := dst.QueryString("rls", `SELECT relrowsecurity::text || ' ' || relforcerowsecurity::text FROM pg_class WHERE oid = 'public.secrets'::regclass`); got != "true true" {
		t.Errorf("joined table's row security after cleanup: %s, want enabled and forced (true true) as on the source", got)
	}
}

// One source transaction writes a table, forces it with a policy
// (statements captured one by one) and writes it again: the rows written
// after FORCE arrive, the table held from then on.
func TestRLSAttackForceAndWritesInOneTransaction(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "rls", `CREATE TABLE t (id int PRIMARY KEY, who text)`, "public.t")
	target := ddlTarget(t, dst, "ordered", "rls", "TABLE t")
	source := src.URL("postgres", "", "rls")
	src.Exec("rls", `INSERT INTO t VALUES (0, 'x')`)
	if res := runCLI(t, nil, "sync", "--catch-up", "--ddl-capture", "--source", source, "--target", target, "--include-tables", "rls.public.t"); res.Code != 0 {
		t.Fatalf("sync --catch-up --ddl-capture: exit %d\n%s", res.Code, res.Stderr)
	}
	conn := src.Connect("rls")
	ctx := context.Background()
	for _, stmt := range []string{
		`BEGIN`,
		`INSERT INTO t VALUES (1, 'a')`,
		`CREATE POLICY mine ON t USING (who = current_user)`,
		`ALTER TABLE t ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY`,
		`INSERT INTO t VALUES (2, 'b')`,
		`UPDATE t SET who = 'y' WHERE id = 0`,
		`DELETE FROM t WHERE id = 1`,
		`COMMIT`,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target, "--include-tables", "rls.public.t"); res.Code != 0 {
		t.Fatalf("sync --catch-up after FORCE in the transaction: exit %d\n%s", res.Code, lastLines(res.Stderr, 4))
	}
	assertSameTables(t, src, dst, "rls", "t")
	if got := rlsForced(t, dst, "rls", "public", "t"); got != "false 1" {
		t.Errorf("after FORCE in the transaction: %q, want held (false 1)", got)
	}
}

// Without --ddl-capture, a held table renamed on the source is renamed on
// the target when its Relation message comes, its hold with it; cleanup
// forces it again under its new name.
func TestRLSAttackRenameHeldTableWithoutCapture(t *testing.T) {
	src, dst := pgtestPair(t)
	const schema = `CREATE TABLE t (id int PRIMARY KEY, who text);
		ALTER TABLE t ENABLE ROW LEVEL SECURITY; ALTER TABLE t FORCE ROW LEVEL SECURITY;
		CREATE POLICY mine ON t USING (who = current_user)`
	prepareStreaming(t, src, dst, "rls", schema, "public.t")
	target := ddlTarget(t, dst, "ordered", "rls", "TABLE t")
	source := src.URL("postgres", "", "rls")
	catchUp := func(step string) {
		t.Helper()
		if res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target, "--include-tables", "rls.public.*"); res.Code != 0 {
			t.Fatalf("sync --catch-up %s: exit %d\n%s", step, res.Code, lastLines(res.Stderr, 4))
		}
	}
	src.Exec("rls", `INSERT INTO t VALUES (1, 'a'), (2, 'b')`)
	catchUp("before the rename")
	src.Exec("rls", `ALTER TABLE t RENAME TO t2`)
	src.Exec("rls", `INSERT INTO t2 VALUES (3, 'c'); UPDATE t2 SET who = 'z' WHERE id = 1`)
	catchUp("after the rename")
	assertSameTables(t, src, dst, "rls", "t2")
	if got := rlsForced(t, dst, "rls", "public", "t2"); got != "false 1" {
		t.Errorf("after the rename: %q, want t2 held (false 1)", got)
	}
	if res := runCLI(t, nil, "cleanup", "--yes", "--source", source, "--target", dst.URL("postgres", "", "rls")); res.Code != 0 {
		t.Fatalf("cleanup: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if got := dst.QueryString("rls", `SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.t2'::regclass`); got != "true" {
		t.Errorf("t2 forced after cleanup: %s, want true as on the source", got)
	}
}

// A running sync whose target role loses BYPASSRLS (the README now says an
// owner in ordered mode does not need it): the tables it met while it
// bypassed row security were not held, and a forced one is not held when
// the role changes, so the next change stops sync with exit 4 ("needs
// action"), though a restart of sync alone holds the table and goes on.
func TestRLSAttackRoleLosesBypassWhileSyncRuns(t *testing.T) {
	t.Skip("not fixed: a forced table met while the role bypassed row security is held only when the next session's Relation message for it comes, so losing BYPASSRLS mid-run stops sync with exit 4; running sync again goes on")
	src, dst, source, target := forcedSecretsPair(t, "", "BYPASSRLS")
	if res := runCLI(t, nil, "init", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	daemon := startSync(t, []string{quickExit}, "sync", "--source", source, "--target", target)
	src.Exec("rls", "INSERT INTO secrets VALUES (101, 1)")
	eventually(t, 30*time.Second, "the first row applied", func() bool {
		return dst.QueryString("rls", "SELECT count(*) FROM secrets WHERE id = 101") == "1"
	})
	dst.Exec("postgres", "ALTER ROLE applier NOBYPASSRLS")
	src.Exec("rls", "INSERT INTO secrets VALUES (102, 1); UPDATE secrets SET tenant = 2 WHERE id = 2")
	done := make(chan error, 1)
	go func() { done <- daemon.Wait() }()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case err := <-done:
			res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target)
			t.Errorf("sync exited after the role lost BYPASSRLS (%v), where holding the forced table lets it go on (sync run again: exit %d):\n%s",
				err, res.Code, lastLines(syncLog(daemon), 1))
		case <-deadline:
		case <-time.After(200 * time.Millisecond):
			if dst.QueryString("rls", "SELECT count(*) FROM secrets WHERE id = 102") != "1" {
				continue
			}
		}
		break
	}
	assertSameTables(t, src, dst, "rls", "secrets")
}
