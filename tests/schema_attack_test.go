package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Hostile review of following schema changes of streaming tables
// (apply/relation.go, apply/columns.go, apply/alter.go).

// attackCatchUp runs sync --catch-up with a time limit (a stuck sync retries
// forever) and returns the result without failing.
func attackCatchUp(t *testing.T, srcURL, dstURL string, limit time.Duration) Result {
	t.Helper()
	return runCLIContext(t, context.Background(), limit, nil, "sync", "--catch-up", "--source", srcURL, "--target", dstURL, "--max-retry-delay", "300ms")
}

func assertSameColumns(t *testing.T, src, dst interface {
	QueryString(db, sql string, args ...any) string
}, db, table string) {
	t.Helper()
	if s, d := src.QueryString(db, fmt.Sprintf(columnsSQL, table)), dst.QueryString(db, fmt.Sprintf(columnsSQL, table)); s != d {
		t.Errorf("columns of %s differ\nsource:\n%s\ntarget:\n%s", table, s, d)
	}
}

// Attack: sync lags; a row is updated, then the column is dropped and a new
// column of the same name added. The catalog sync reads for the old Relation
// message has the message's names, so it is taken as "aligned" although the
// message's v is attribute 2 and the catalog's v attribute 3: the target
// drops v and adds the new v at the old message, then writes the old
// column's value into the new column. The source's new v is NULL.
func TestSchemaAttackDropReaddSameNameWhileLagging(t *testing.T) {
	src, dst := pgtestPair(t)
	needPgDump(t, src)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, v int);`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT g, g FROM generate_series(1, 10) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `UPDATE t SET v = 100 WHERE id = 1`)
	src.Exec("att", `ALTER TABLE t DROP COLUMN v; ALTER TABLE t ADD COLUMN v int`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 90*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 10))
	assertSameTables(t, src, dst, "att", "t")
	assertSameColumns(t, src, dst, "att", "t")
}

// Attack: the same, through a rename chain: b renamed to b2 (a change
// written), then b2 dropped and a new b2 added, all before sync reads it.
func TestSchemaAttackRenameThenReaddWhileLagging(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, b int);`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT g, g FROM generate_series(1, 10) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TABLE t RENAME COLUMN b TO b2; UPDATE t SET b2 = -1 WHERE id = 2`)
	src.Exec("att", `ALTER TABLE t DROP COLUMN b2; ALTER TABLE t ADD COLUMN b2 int DEFAULT 7`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 90*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 10))
	assertSameTables(t, src, dst, "att", "t")
	assertSameColumns(t, src, dst, "att", "t")
}

// Attack: the DBA's usual sequence before a cutover: fill the NULLs, SET
// NOT NULL, then a catch-up. The NOT NULL waits for a batch ending past the
// source's WAL position when it was seen; other WAL on the source (another
// table here) puts that position past the last published commit, so no
// batch ever ends there: the catch-up ends and the target lacks NOT NULL.
func TestSchemaAttackNotNullBeforeCatchUpEnd(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, a text); CREATE TABLE other (id int PRIMARY KEY);`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT g, NULL FROM generate_series(1, 10) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `UPDATE t SET a = 'filled' WHERE a IS NULL; ALTER TABLE t ALTER COLUMN a SET NOT NULL; INSERT INTO t VALUES (11, 'x')`)
	src.Exec("att", `INSERT INTO other SELECT generate_series(1, 1000)`)
	for i := 0; i < 2; i++ {
		res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 90*time.Second)
		t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 10))
	}
	assertSameTables(t, src, dst, "att", "t")
	assertSameColumns(t, src, dst, "att", "t")
}

// Attack: a column renamed on a partitioned table. The publication names
// the root without publish_via_partition_root, so the stream describes the
// partition, whose inherited column the target cannot rename by itself.
func TestSchemaAttackPartitionedRename(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	src.Exec("postgres", "CREATE DATABASE att")
	src.Exec("att", `CREATE TABLE p (id int PRIMARY KEY, b int) PARTITION BY RANGE (id);
		CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (1000);
		INSERT INTO p SELECT g, g FROM generate_series(1, 10) g`)
	if res := runCLI(t, nil, "init", "--yes", "--source", src.DSN("att"), "--target", dst.DSN("att")); res.Code != 0 {
		t.Fatalf("init exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("att", `ALTER TABLE p RENAME COLUMN b TO b2; UPDATE p SET b2 = -b2 WHERE id < 4; ALTER TABLE p ADD COLUMN c text; UPDATE p SET c = 'c' WHERE id = 5`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 60*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 10))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "p")
	assertSameColumns(t, src, dst, "att", "p")
	assertSameColumns(t, src, dst, "att", "p1")
}

// Attack: a value added to an enum the target already has (ALTER TYPE ...
// ADD VALUE), then used.
func TestSchemaAttackEnumAddValue(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TABLE t (id int PRIMARY KEY, m mood);`, "public.t")
	src.Exec("att", `INSERT INTO t VALUES (1, 'ok')`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TYPE mood ADD VALUE 'happy'`)
	src.Exec("att", `INSERT INTO t VALUES (2, 'happy')`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 60*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 10))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "t")
}

// Attack: the source renames its generated column away and gives its old
// name to a plain column (generated columns are not in the stream, so the
// target's generated column keeps the name).
func TestSchemaAttackRenameOntoGeneratedName(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	t.Skip("limitation (README): a source column renamed to the old name of a (renamed) generated column: the rename fails on the target, sync stops (without --ddl-capture; with it, TestDDLCaptureCarriesWhatTheStreamCannot)")
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, a int, g int GENERATED ALWAYS AS (id * 2) STORED);`, "public.t")
	src.Exec("att", `INSERT INTO t (id, a) SELECT g, g FROM generate_series(1, 5) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TABLE t RENAME COLUMN g TO g_old; ALTER TABLE t RENAME COLUMN a TO g; UPDATE t SET g = 50 WHERE id = 1`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 60*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 10))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "t")
	assertSameColumns(t, src, dst, "att", "t")
}

// Attack: a type change whose old default does not cast to the new type;
// the source dropped the default in the same statement.
func TestSchemaAttackTypeChangeDefaultNoCast(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, c text DEFAULT 'x');`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT g, g::text FROM generate_series(1, 10) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TABLE t ALTER COLUMN c DROP DEFAULT, ALTER COLUMN c TYPE int USING c::int, ALTER COLUMN c SET DEFAULT 0; INSERT INTO t (id) VALUES (11)`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 60*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 10))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	if strings.Contains(res.Stderr, "copying the table again") {
		t.Logf("note: a cast the values take made a full copy of the table")
	}
	assertSameTables(t, src, dst, "att", "t")
	assertSameColumns(t, src, dst, "att", "t")
}

// Attack: odd names in a swap, with a column named like the temporary names
// a swap goes through.
func TestSchemaAttackOddNamesAndTableRename(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, "Größe ""x""" text, "a b" text, seren_replicator_rename_0 text);`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT g, 'g' || g, 'ab' || g, 's' || g FROM generate_series(1, 5) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `BEGIN; ALTER TABLE t RENAME COLUMN "Größe ""x""" TO tmp; ALTER TABLE t RENAME COLUMN "a b" TO "Größe ""x"""; ALTER TABLE t RENAME COLUMN tmp TO "a b";
		ALTER TABLE t RENAME COLUMN seren_replicator_rename_0 TO "a.b"; COMMIT;
		UPDATE t SET "a b" = "a b" || '!' WHERE id < 3`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 60*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 10))
	assertSameTables(t, src, dst, "att", "t")
	assertSameColumns(t, src, dst, "att", "t")
}

// Attack: while sync lags, a change sync cannot follow by DDL (a rename read
// after a later change to the columns) and then the table renamed: the
// table must be copied again, under its new name.
func TestSchemaAttackRecopyOfRenamedTable(t *testing.T) {
	src, dst := pgtestPair(t)
	needPgDump(t, src)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, b int);`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT g, g FROM generate_series(1, 10) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TABLE t RENAME COLUMN b TO b2; UPDATE t SET b2 = -b2 WHERE id < 4; ALTER TABLE t ADD COLUMN d int DEFAULT 3;
		ALTER TABLE t RENAME TO u; UPDATE u SET d = 4 WHERE id = 5`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 60*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 10))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "u")
	assertSameColumns(t, src, dst, "att", "u")
}

// Attack: a column added nullable to an empty table, a row written with it
// NULL, then filled and SET NOT NULL, all before sync reads them. The target
// table is empty when the column is added, so it gets NOT NULL at once, and
// the stream's NULL row no longer fits.
func TestSchemaAttackNotNullOnEmptyTableWhileLagging(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	// A unique column keeps the applier from folding the INSERT and the
	// UPDATE into one row.
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, u int UNIQUE);`, "public.t")
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TABLE t ADD COLUMN z int; INSERT INTO t VALUES (1, 1, NULL); UPDATE t SET z = 1; ALTER TABLE t ALTER COLUMN z SET NOT NULL`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 60*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 10))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "t")
	assertSameColumns(t, src, dst, "att", "t")
}

// Attack: a column renamed on a partitioned table, read at once (the
// catalog still has the message's columns), after a real init.
func TestSchemaAttackPartitionedRenameAligned(t *testing.T) {
	src, dst := pgtestPair(t)
	needPgDump(t, src)
	if src.QueryString("postgres", "SELECT current_setting('server_version_num')::int < 130000") == "true" {
		t.Skip("PostgreSQL 12 cannot publish a partitioned table")
	}
	src.Exec("postgres", "CREATE DATABASE att")
	src.Exec("att", `CREATE TABLE p (id int PRIMARY KEY, b int) PARTITION BY RANGE (id);
		CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (1000);
		INSERT INTO p SELECT g, g FROM generate_series(1, 10) g`)
	if res := runCLI(t, nil, "init", "--yes", "--source", src.DSN("att"), "--target", dst.DSN("att")); res.Code != 0 {
		t.Fatalf("init exit %d\n%s", res.Code, res.Stderr)
	}
	t.Logf("recorded: %s", dst.QueryString("att", `SELECT string_agg(source_relid::text || ':' || attnum || ':' || column_name, ', ') FROM seren_replicator.source_columns`))
	src.Exec("att", `ALTER TABLE p RENAME COLUMN b TO b2; UPDATE p SET b2 = -b2 WHERE id < 4`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 45*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 10))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "p")
	assertSameColumns(t, src, dst, "att", "p")
}

// Attack: a column added to and one dropped from a partitioned table (the
// stream describes the partition), after a real init.
func TestSchemaAttackPartitionedAddDrop(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	src.Exec("postgres", "CREATE DATABASE att")
	src.Exec("att", `CREATE TABLE p (id int PRIMARY KEY, b int, old text) PARTITION BY RANGE (id);
		CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (1000);
		INSERT INTO p SELECT g, g FROM generate_series(1, 10) g`)
	if res := runCLI(t, nil, "init", "--yes", "--source", src.DSN("att"), "--target", dst.DSN("att")); res.Code != 0 {
		t.Fatalf("init exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("att", `ALTER TABLE p ADD COLUMN c text; ALTER TABLE p DROP COLUMN old; UPDATE p SET c = 'c' WHERE id < 4`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 45*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 10))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "p")
	assertSameColumns(t, src, dst, "att", "p")
}

// Attack: a view over a table whose schema change makes sync copy it again
// (a column added with a volatile default). The add-table path drops the
// target's table without CASCADE, which the view refuses.
func TestSchemaAttackRecopyOfTableWithView(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, b int); CREATE VIEW v AS SELECT id, b FROM t;`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT g, g FROM generate_series(1, 10) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TABLE t ADD COLUMN at timestamptz DEFAULT clock_timestamp(); UPDATE t SET b = -b WHERE id < 3`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 45*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 6))
	// The copy again cannot drop the table under the view: sync stops
	// (exit 4, not retrying for ever) saying what to do, and following it
	// works.
	if res.Code != 4 || !strings.Contains(res.Stderr, "depend") || !strings.Contains(res.Stderr, "drop what depends on the table there") {
		t.Fatalf("catch-up exit %d, want 4 with what to do", res.Code)
	}
	dst.Exec("att", `DROP VIEW v`)
	if res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 45*time.Second); res.Code != 0 {
		t.Fatalf("after dropping the view: exit %d\n%s", res.Code, reviewTail(res.Stderr, 6))
	}
	dst.Exec("att", `CREATE VIEW v AS SELECT id, b FROM t`)
	assertSameTables(t, src, dst, "att", "t", "v")
}

// Attack: in ordered mode (a plain owner role), a key column's type changed
// on a parent and its child, and names rotated among five columns and
// swapped between two tables in one transaction, while sync lags and then
// while it streams.
func TestSchemaAttackKeyTypeAndRotations(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE parent (id int PRIMARY KEY, c1 text, c2 text, c3 text, c4 text, c5 text);
		CREATE TABLE child (id int PRIMARY KEY, pid int REFERENCES parent (id) ON DELETE CASCADE, x text, y text);`, "public.parent", "public.child")
	dst.CreateRole("applier", "applier-pw")
	dst.Exec("att", `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier; GRANT CREATE ON DATABASE att TO applier;
		GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier; ALTER TABLE parent OWNER TO applier; ALTER TABLE child OWNER TO applier;`)
	target := dst.URL("applier", "applier-pw", "att")
	src.Exec("att", `INSERT INTO parent SELECT g, 'a' || g, 'b' || g, 'c' || g, 'd' || g, 'e' || g FROM generate_series(1, 20) g;
		INSERT INTO child SELECT g, g, 'x' || g, 'y' || g FROM generate_series(1, 20) g`)
	if res := attackCatchUp(t, src.URL("postgres", "", "att"), target, 60*time.Second); res.Code != 0 {
		t.Fatalf("exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("att", `BEGIN;
		ALTER TABLE parent RENAME COLUMN c1 TO tmp; ALTER TABLE parent RENAME COLUMN c2 TO c1; ALTER TABLE parent RENAME COLUMN c3 TO c2;
		ALTER TABLE parent RENAME COLUMN c4 TO c3; ALTER TABLE parent RENAME COLUMN c5 TO c4; ALTER TABLE parent RENAME COLUMN tmp TO c5;
		ALTER TABLE child RENAME COLUMN x TO tmp; ALTER TABLE child RENAME COLUMN y TO x; ALTER TABLE child RENAME COLUMN tmp TO y;
		UPDATE parent SET c1 = c1 || '!' WHERE id < 5; UPDATE child SET x = x || '?' WHERE id < 5; COMMIT;
		ALTER TABLE child ALTER COLUMN pid TYPE bigint; ALTER TABLE parent ALTER COLUMN id TYPE bigint;
		INSERT INTO parent (id, c1) VALUES (5000000000, 'big'); INSERT INTO child (id, pid) VALUES (100, 5000000000); DELETE FROM parent WHERE id = 3`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), target, 60*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 8))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "parent", "child")
	assertSameColumns(t, src, dst, "att", "parent")
	assertSameColumns(t, src, dst, "att", "child")
}

// Attack: a type change whose cast depends on session settings. The source
// database's time zone is New York; timestamp becomes timestamptz there
// (each value read as New York time). The target converts its copy with a
// cast in the applier's session, whose TimeZone is UTC: every row not
// written again is 5 hours off.
func TestSchemaAttackTypeChangeCastDependsOnTimeZone(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, ts timestamp);`, "public.t")
	src.Exec("postgres", "ALTER DATABASE att SET timezone = 'America/New_York'")
	src.Exec("att", `INSERT INTO t SELECT g, timestamp '2026-01-01 12:00' + g * interval '1 day' FROM generate_series(1, 5) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TABLE t ALTER COLUMN ts TYPE timestamptz; UPDATE t SET ts = ts WHERE id = 1`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 45*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 6))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	const epochs = `SELECT string_agg(id || ':' || extract(epoch FROM ts), ', ' ORDER BY id) FROM t`
	if s, d := src.QueryString("att", epochs), dst.QueryString("att", epochs); s != d {
		t.Errorf("instants differ\nsource: %s\ntarget: %s", s, d)
	}
}

// Attack: a long-running daemon meets four separate schema changes of one
// table that each need a copy (columns added with a volatile default, days
// apart in real life). Each copy succeeds; the count of copies is never
// reset, so the fourth stops sync as though copying "did not help".
func TestSchemaAttackRecopyCountNeverResets(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, b int);`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT g, g FROM generate_series(1, 10) g`)
	daemon := startSync(t, nil, "sync", "--source", src.URL("postgres", "", "att"), "--target", dst.URL("postgres", "", "att"), "--max-retry-delay", "300ms")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sync log:\n%s", reviewTail(syncLog(daemon), 12))
		}
	})
	eventually(t, 30*time.Second, "the first rows", func() bool { return tableContents(t, src, "att", "t") == tableContents(t, dst, "att", "t") })
	dconn := dst.Connect("att")
	same := func() bool {
		var got string
		if err := dconn.QueryRow(context.Background(), `SELECT coalesce(string_agg(x::text, E'\n' ORDER BY x::text), '') FROM t x`).Scan(&got); err != nil {
			return false // the table is being copied again
		}
		return got == tableContents(t, src, "att", "t")
	}
	for i := 1; i <= 4; i++ {
		src.Exec("att", fmt.Sprintf(`ALTER TABLE t ADD COLUMN at%d timestamptz DEFAULT clock_timestamp(); UPDATE t SET b = b + 1 WHERE id = %d`, i, i))
		eventually(t, 40*time.Second, fmt.Sprintf("copy %d", i), same)
	}
	src.Exec("att", `UPDATE t SET b = 0 WHERE id = 10`)
	eventually(t, 20*time.Second, "streaming after the copies", same)
	if strings.Contains(syncLog(daemon), "did not help") {
		t.Errorf("sync gave up on a table whose copies all succeeded")
	}
}

// Attack: ordered mode (plain owner role), a foreign key DEFERRABLE
// INITIALLY DEFERRED (what Django creates), and a source transaction that
// writes the child before its parent and, between them, the first change
// to a table whose columns changed earlier. runDDL runs SET CONSTRAINTS ALL
// IMMEDIATE before its ALTER TABLE, which checks the child row at once: the
// source never checked it there.
func TestSchemaAttackDeferredForeignKeyOrdered(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE parent (id int PRIMARY KEY);
		CREATE TABLE child (id int PRIMARY KEY, pid int REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
		CREATE TABLE other (id int PRIMARY KEY, a text);`, "public.parent", "public.child", "public.other")
	dst.CreateRole("applier", "applier-pw")
	dst.Exec("att", `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier; GRANT CREATE ON DATABASE att TO applier;
		GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier;
		ALTER TABLE parent OWNER TO applier; ALTER TABLE child OWNER TO applier; ALTER TABLE other OWNER TO applier;`)
	target := dst.URL("applier", "applier-pw", "att")
	src.Exec("att", `INSERT INTO other VALUES (1, 'a')`)
	if res := attackCatchUp(t, src.URL("postgres", "", "att"), target, 60*time.Second); res.Code != 0 {
		t.Fatalf("exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("att", `ALTER TABLE other RENAME COLUMN a TO b`)
	src.Exec("att", `BEGIN; INSERT INTO child VALUES (1, 1); UPDATE other SET b = 'b'; INSERT INTO parent VALUES (1); COMMIT`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), target, 45*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 6))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "parent", "child", "other")
}

// Attack: the source drops a column with CASCADE, taking the generated
// column computed from it. Generated columns are not in the stream, so the
// target keeps its generated column, which then blocks dropping the base.
func TestSchemaAttackDropColumnUnderGenerated(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	t.Skip("limitation (README): DROP COLUMN ... CASCADE of a generated column's base: the target keeps the generated column, the drop fails, sync stops")
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, a int, b int, g int GENERATED ALWAYS AS (a * 2) STORED);`, "public.t")
	src.Exec("att", `INSERT INTO t (id, a, b) SELECT g, g, g FROM generate_series(1, 5) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TABLE t DROP COLUMN a CASCADE; UPDATE t SET b = -b WHERE id < 3`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 45*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 6))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "t")
	assertSameColumns(t, src, dst, "att", "t")
}

// Attack: a type change with a USING expression whose values the target's
// values also take by a plain cast: the target converts with the cast and
// the rows not written again differ from the source's, with only a warning
// in the log.
func TestSchemaAttackTypeChangeUsingDiffersFromCast(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, c text);`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT g, (g * 100)::text FROM generate_series(1, 5) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TABLE t ALTER COLUMN c TYPE int USING length(c); UPDATE t SET c = c WHERE id = 1`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 45*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 6))
	assertSameTables(t, src, dst, "att", "t")
}

// Attack: sync killed with SIGKILL while it copies a table again for a
// schema change, under writes; started again, the target must converge and
// no slot of the copy may stay behind on the source.
func TestSchemaAttackKillDuringRecopy(t *testing.T) {
	longTest(t)
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, b int, pad text);
		CREATE TABLE c (id int PRIMARY KEY, tid int REFERENCES t (id) ON DELETE CASCADE);`, "public.t", "public.c")
	src.Exec("att", `INSERT INTO t SELECT g, g, repeat('x', 200) FROM generate_series(1, 300000) g; INSERT INTO c SELECT g, g FROM generate_series(1, 1000) g`)
	catchUp(t, src, dst, "att")
	args := []string{"sync", "--source", src.URL("postgres", "", "att"), "--target", dst.URL("postgres", "", "att"), "--max-retry-delay", "300ms"}
	daemon := startSync(t, nil, args...)
	src.Exec("att", `ALTER TABLE t ADD COLUMN at timestamptz DEFAULT clock_timestamp(); UPDATE t SET b = -b WHERE id < 50; DELETE FROM t WHERE id = 60`)
	eventually(t, 30*time.Second, "the copy to start", func() bool {
		return strings.Contains(syncLog(daemon), "replacing the target's copy of the table")
	})
	time.Sleep(300 * time.Millisecond)
	daemon.Process.Kill()
	daemon.Wait()
	t.Logf("first run:\n%s", reviewTail(syncLog(daemon), 6))
	src.Exec("att", `UPDATE t SET b = 7 WHERE id = 70; DELETE FROM t WHERE id = 80`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 90*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 8))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	const sum = `SELECT count(*) || ' ' || sum(b) || ' ' || md5(string_agg(id || ':' || b || ':' || at, ',' ORDER BY id)) FROM t`
	if s, d := src.QueryString("att", sum), dst.QueryString("att", sum); s != d {
		t.Errorf("t differs: source %s, target %s", s, d)
	}
	assertSameTables(t, src, dst, "att", "c")
	if got := dst.QueryString("att", `SELECT count(*) FROM pg_constraint WHERE conrelid = 'c'::regclass AND contype = 'f'`); got != "1" {
		t.Errorf("c has %s foreign keys on the target, want 1", got)
	}
	if got := src.QueryString("att", `SELECT coalesce(string_agg(slot_name, ', '), '') FROM pg_replication_slots WHERE slot_name <> 'seren_att'`); got != "" {
		t.Errorf("slots left on the source: %s", got)
	}
}

// Attack: an enum value renamed on the source (ALTER TYPE ... RENAME
// VALUE). Rows the stream does not carry again keep the old label on the
// target.
func TestSchemaAttackEnumRenameValue(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	t.Skip("limitation (README): ALTER TYPE ... RENAME VALUE is not followed: untouched rows keep the old label on the target, exit 0 (without --ddl-capture; with it, TestDDLCaptureCarriesWhatTheStreamCannot)")
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TABLE t (id int PRIMARY KEY, m mood);`, "public.t")
	src.Exec("att", `INSERT INTO t VALUES (1, 'ok')`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'; INSERT INTO t VALUES (2, 'sad')`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 45*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 6))
	assertSameTables(t, src, dst, "att", "t")
}

// Attack: while sync lags, a column of a type created after init is added
// and written, then the column and its type dropped. The Relation message
// names a type the source no longer has.
func TestSchemaAttackShortLivedTypeWhileLagging(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, b int);`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT g, g FROM generate_series(1, 5) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `CREATE TYPE tmpmood AS ENUM ('a', 'b'); ALTER TABLE t ADD COLUMN m tmpmood; UPDATE t SET m = 'a' WHERE id = 1;
		ALTER TABLE t DROP COLUMN m; DROP TYPE tmpmood; UPDATE t SET b = -b WHERE id = 2`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 45*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 6))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "t")
	assertSameColumns(t, src, dst, "att", "t")
}

// Attack: a domain over an enum, arrays of both, all created after init.
func TestSchemaAttackDomainOverEnumArrays(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY);`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT generate_series(1, 5)`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `CREATE SCHEMA "My Types"; CREATE TYPE "My Types"."Mood" AS ENUM ('sad', 'o''k');
		CREATE DOMAIN "My Types".okmood AS "My Types"."Mood" DEFAULT 'o''k' NOT NULL CHECK (VALUE <> 'sad');
		ALTER TABLE t ADD COLUMN d "My Types".okmood, ADD COLUMN ea "My Types"."Mood"[], ADD COLUMN da "My Types".okmood[];
		UPDATE t SET ea = '{sad,o''k}', da = '{o''k}' WHERE id < 3; INSERT INTO t (id) VALUES (6)`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 45*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 6))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "t")
	assertSameColumns(t, src, dst, "att", "t")
}

// Attack: while sync lags, a column renamed and written, then the table
// renamed and written.
func TestSchemaAttackColumnThenTableRenameWhileLagging(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, b int, c text);`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT g, g, 'c' FROM generate_series(1, 5) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TABLE t RENAME COLUMN b TO b2; UPDATE t SET b2 = -b2 WHERE id < 3; ALTER TABLE t RENAME TO u; UPDATE u SET c = 'u' WHERE id = 4;
		ALTER TABLE u RENAME COLUMN c TO "C c"; UPDATE u SET "C c" = 'x' WHERE id = 5`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 45*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 6))
	if res.Code != 0 {
		t.Errorf("catch-up exit %d", res.Code)
	}
	assertSameTables(t, src, dst, "att", "u")
	assertSameColumns(t, src, dst, "att", "u")
}

// Attack: the DBA's last schema change before a cutover, with no write to
// the table after it: nothing of it reaches the stream (pgoutput sends a
// Relation message only before a change), so a catch-up ends with the old
// column name, default and NOT NULL on the target.
func TestSchemaAttackSchemaChangeWithoutLaterWrites(t *testing.T) {
	longTest(t) // make test-long; make test keeps a few of these
	t.Skip("limitation (README): DDL with no later write to the table never reaches the target; a catch-up ends exit 0 with the old column name, default and nullability (without --ddl-capture; with it, TestDDLCaptureCarriesWhatTheStreamCannot)")
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "att", `CREATE TABLE t (id int PRIMARY KEY, b int, c text);`, "public.t")
	src.Exec("att", `INSERT INTO t SELECT g, g, 'c' FROM generate_series(1, 5) g`)
	catchUp(t, src, dst, "att")
	src.Exec("att", `ALTER TABLE t RENAME COLUMN b TO b2; ALTER TABLE t ALTER COLUMN c SET DEFAULT 'd'; ALTER TABLE t ALTER COLUMN c SET NOT NULL`)
	res := attackCatchUp(t, src.URL("postgres", "", "att"), dst.URL("postgres", "", "att"), 45*time.Second)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 6))
	assertSameColumns(t, src, dst, "att", "t")
}
