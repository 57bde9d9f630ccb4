package tests

import (
	"strings"
	"testing"
)

const basicSchema = `
CREATE TABLE public.items (id bigint PRIMARY KEY, name text, qty int, note text);
CREATE TABLE public."Mixed Case ""Quoted""" ("Key" int PRIMARY KEY, "välue" text);
CREATE TABLE public.nokey (a int, b text);
ALTER TABLE public.nokey REPLICA IDENTITY FULL;
CREATE TABLE public.byindex (a int NOT NULL, b text);
CREATE UNIQUE INDEX byindex_a ON public.byindex (a);
ALTER TABLE public.byindex REPLICA IDENTITY USING INDEX byindex_a;
`

var basicTables = []string{"public.items", `public."Mixed Case ""Quoted"""`, "public.nokey", "public.byindex"}

func TestSyncCatchUpAppliesChanges(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "app", basicSchema, "public.items", `public.Mixed Case "Quoted"`, "public.nokey", "public.byindex")
	src.Exec("app", `
INSERT INTO items SELECT g, 'item ' || g, g * 10, NULL FROM generate_series(1, 500) g;
UPDATE items SET qty = qty + 1 WHERE id % 3 = 0;
UPDATE items SET id = id + 10000 WHERE id = 7;            -- key change
DELETE FROM items WHERE id % 5 = 0;
INSERT INTO "Mixed Case ""Quoted""" VALUES (1, 'ünïcode'), (2, 'two'), (3, NULL);
UPDATE "Mixed Case ""Quoted""" SET "välue" = 'changed' WHERE "Key" = 2;
INSERT INTO nokey VALUES (1, 'dup'), (1, 'dup'), (1, 'dup'), (2, NULL);
UPDATE nokey SET b = 'one of three' WHERE ctid = (SELECT ctid FROM nokey WHERE a = 1 LIMIT 1);
DELETE FROM nokey WHERE ctid = (SELECT ctid FROM nokey WHERE a = 1 AND b = 'dup' LIMIT 1);
UPDATE nokey SET b = 'was null' WHERE a = 2;
INSERT INTO byindex SELECT g, 'b' || g FROM generate_series(1, 20) g;
UPDATE byindex SET a = a + 100 WHERE a <= 5;
DELETE FROM byindex WHERE a = 10;
`)
	res := catchUp(t, src, dst, "app")
	if !strings.Contains(res.Stdout, "caught up") {
		t.Errorf("catch-up output lacks progress line: %q", res.Stdout)
	}
	assertSameTables(t, src, dst, "app", basicTables...)
	if got := dst.QueryString("app", "SELECT count(*) FROM nokey WHERE a = 1"); got != "2" {
		t.Errorf("nokey duplicates on target = %s, want 2 (exactly one row deleted)", got)
	}

	// A second run resumes from the checkpoint: nothing is applied twice.
	src.Exec("app", `INSERT INTO items VALUES (100000, 'late', 1, NULL); TRUNCATE nokey;`)
	catchUp(t, src, dst, "app")
	assertSameTables(t, src, dst, "app", basicTables...)
}

// With the source URL naming the postgres database, every user database is
// streamed concurrently, each to the target database of the same name; a
// failure names its database and stops only that database.
func TestSyncSeveralDatabases(t *testing.T) {
	src, dst := pgtestPair(t)
	for _, db := range []string{"alpha", "beta"} {
		prepareStreaming(t, src, dst, db, `CREATE TABLE t (id int PRIMARY KEY, v text);`, "public.t")
		src.Exec(db, `INSERT INTO t SELECT g, '`+db+`' FROM generate_series(1, 300) g; DELETE FROM t WHERE id < 10;`)
	}
	all := []string{"sync", "--catch-up", "--source", src.URL("postgres", "", "postgres"), "--target", dst.URL("postgres", "", "postgres")}
	res := runCLI(t, nil, all...)
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	for _, db := range []string{"alpha", "beta"} {
		if !strings.Contains(res.Stdout, db+": caught up") {
			t.Errorf("no catch-up line for %s: %s", db, res.Stdout)
		}
		assertSameTables(t, src, dst, db, "t")
	}
	// Break one database: the error names it, and the other one still
	// catches up.
	dst.Exec("beta", `DELETE FROM t WHERE id = 100`)
	src.Exec("beta", `UPDATE t SET v = 'x' WHERE id = 100`)
	src.Exec("alpha", `INSERT INTO t SELECT g, 'later' FROM generate_series(1001, 1300) g`)
	res = runCLI(t, nil, all...)
	if res.Code != exitNeedsAction || !strings.Contains(res.Stderr, "database beta") || !strings.Contains(res.Stderr, "public.t") {
		t.Fatalf("exit %d, want 4 naming database beta and table public.t: %s", res.Code, res.Stderr)
	}
	if !strings.Contains(res.Stderr, "the others go on") {
		t.Errorf("no log line saying the other databases go on: %s", res.Stderr)
	}
	assertSameTables(t, src, dst, "alpha", "t")
	if res := runCLI(t, nil, append(all, "--slot", "x")...); res.Code != 2 {
		t.Errorf("--slot with two databases: exit %d, want 2", res.Code)
	}
}

// A selected table outside the publication joins the migration (copied into
// the empty table the target already has). A published table the selection
// leaves out is removed from the migration (with --schema-changes=stop,
// refused): its copy on the target stays as it was; selected again, it is
// copied again and streams.
func TestSyncSelectionAndPublication(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "app", `CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);`, "public.a")
	src.Exec("app", `INSERT INTO a VALUES (1); INSERT INTO b VALUES (1), (2)`)
	catchUp(t, src, dst, "app")
	src.Exec("app", `INSERT INTO b VALUES (3)`)
	catchUp(t, src, dst, "app")
	assertSameTables(t, src, dst, "app", "a", "b")
	res := runCLI(t, nil, syncArgs(src, dst, "app", "--catch-up", "--include-tables", "app.a", "--schema-changes", "stop")...)
	if res.Code != exitNeedsAction || !strings.Contains(res.Stderr, "b is in publication") || !strings.Contains(res.Stderr, "not selected") {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	src.Exec("app", `INSERT INTO a VALUES (2); INSERT INTO b VALUES (4)`)
	res = catchUp(t, src, dst, "app", "--include-tables", "app.a")
	if !strings.Contains(res.Stderr, "table removed from the migration") {
		t.Errorf("the removal was not said:\n%s", res.Stderr)
	}
	src.Exec("app", `INSERT INTO a VALUES (3); INSERT INTO b VALUES (5)`)
	catchUp(t, src, dst, "app", "--include-tables", "app.a")
	assertSameTables(t, src, dst, "app", "a")
	if got := dst.QueryString("app", `SELECT string_agg(id::text, ',' ORDER BY id) FROM b`); got != "1,2,3,4" {
		t.Errorf("the removed table's copy is %s, want 1,2,3,4: kept as it was when removed", got)
	}
	if got := src.QueryString("app", `SELECT count(*) FROM pg_publication_tables WHERE tablename = 'b'`); got != "0" {
		t.Errorf("b is still published")
	}
	// Selected again, it is copied again and streams.
	res = catchUp(t, src, dst, "app")
	if !strings.Contains(res.Stderr, "table joined the migration") {
		t.Errorf("b did not join again:\n%s", res.Stderr)
	}
	src.Exec("app", `INSERT INTO b VALUES (6)`)
	catchUp(t, src, dst, "app")
	assertSameTables(t, src, dst, "app", "a", "b")
}
