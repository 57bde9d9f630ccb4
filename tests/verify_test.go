package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
	"github.com/serenorg/postgres-seren-replicator/verify"
)

// verifySchema is created identically on both sides; the tests then change
// the target and check that verify names exactly what changed.
const verifySchema = `
CREATE TABLE big (id bigint PRIMARY KEY, v text NOT NULL);
INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 1000000) g;
CREATE TABLE same (id int PRIMARY KEY, t timestamptz, d date, i interval, f float8, n numeric, b bytea, j jsonb, a int[], m money);
INSERT INTO same SELECT g, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute', '2024-01-01'::date + g, g * interval '1 hour 1 second',
	g / 7.0, g / 3.0, decode(md5(g::text), 'hex'), jsonb_build_object('g', g), ARRAY[g, NULL], g * 1.01
	FROM generate_series(1, 5000) g;
CREATE TABLE part (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE part_1 PARTITION OF part FOR VALUES FROM (0) TO (15000);
CREATE TABLE part_2 PARTITION OF part FOR VALUES FROM (15000) TO (MAXVALUE);
INSERT INTO part SELECT g, 'v' || g FROM generate_series(1, 30000) g;
CREATE TABLE extra (id int PRIMARY KEY, v text);
INSERT INTO extra SELECT g, 'v' || g FROM generate_series(1, 1000) g;
CREATE TABLE missing (id int PRIMARY KEY, v text);
INSERT INTO missing SELECT g, 'v' || g FROM generate_series(1, 1000) g;
CREATE TABLE nulls (id int PRIMARY KEY, v text);
INSERT INTO nulls VALUES (1, NULL), (2, ''), (3, 'x');
CREATE TABLE num (id int PRIMARY KEY, v numeric);
INSERT INTO num VALUES (1, 1.0), (2, 2.5);
CREATE TABLE nokey_count (a int, b text);
INSERT INTO nokey_count VALUES (1, 'a'), (1, 'a'), (2, 'b');
CREATE TABLE nokey_hash (a int, b text);
INSERT INTO nokey_hash VALUES (1, 'a'), (2, 'b'), (3, 'c');
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Táble ""x""" ("Key ""K""" int PRIMARY KEY, "Välue" text);
INSERT INTO "My Schema"."Táble ""x""" SELECT g, 'v' || g FROM generate_series(1, 100) g;
CREATE TABLE comp (a int, b text, v int, PRIMARY KEY (a, b));
INSERT INTO comp SELECT g / 10, 'k' || (g % 10), g FROM generate_series(0, 99999) g;
CREATE TABLE many (id int PRIMARY KEY, v text);
INSERT INTO many SELECT g, 'v' || g FROM generate_series(1, 20000) g;
`

// targetChanges are the differences the tests expect verify to find.
const targetChanges = `
UPDATE big SET v = overlay(v placing 'X' from 7 for 1) WHERE id = 765432;
INSERT INTO extra VALUES (1001, 'new');
DELETE FROM missing WHERE id = 500;
UPDATE nulls SET v = CASE id WHEN 1 THEN '' WHEN 2 THEN NULL ELSE v END;
UPDATE num SET v = 1.00 WHERE id = 1;
DELETE FROM nokey_count WHERE ctid = (SELECT min(ctid) FROM nokey_count WHERE a = 1);
UPDATE nokey_hash SET b = 'C' WHERE a = 3;
UPDATE "My Schema"."Táble ""x""" SET "Välue" = 'changed' WHERE "Key ""K""" = 42;
UPDATE comp SET v = -1 WHERE a = 7777 AND b = 'k3';
DELETE FROM many WHERE id % 400 = 0;
UPDATE part SET v = 'changed' WHERE id = 20000;
`

// targetSettings make the target print values differently by default:
// verify must normalise them (the table same still matches).
const targetSettings = `
ALTER DATABASE app SET TimeZone = 'Asia/Kolkata';
ALTER DATABASE app SET DateStyle = 'SQL, DMY';
ALTER DATABASE app SET IntervalStyle = 'sql_standard';
ALTER DATABASE app SET extra_float_digits = -3;
ALTER DATABASE app SET bytea_output = 'escape';
`

// startVerifyPair starts a pair loaded with verifySchema on both sides and
// targetChanges on the target.
func startVerifyPair(t *testing.T) (src, dst *pgtest.Cluster) {
	t.Helper()
	src, dst = pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE app")
	dst.Exec("postgres", "CREATE DATABASE app")
	dst.Exec("app", targetSettings)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, c := range []*pgtest.Cluster{src, dst} {
		wg.Add(1)
		go func() { // both sides load at once
			defer wg.Done()
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, c.DSN("app"))
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Close(ctx)
			errs[i] = conn.PgConn().Exec(ctx, verifySchema+"; ANALYZE").Close()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("load verify schema: %v", err)
		}
	}
	dst.Exec("app", targetChanges)
	return src, dst
}

// TestVerify runs the comparisons against one loaded pair.
func TestVerify(t *testing.T) {
	src, dst := startVerifyPair(t)
	t.Run("NamesDifferingRows", func(t *testing.T) { testVerifyNamesDifferingRows(t, src, dst) })
	t.Run("TableWithoutKey", func(t *testing.T) { testVerifyTableWithoutKey(t, src, dst) })
	t.Run("ExitCodesAndText", func(t *testing.T) { testVerifyExitCodesAndText(t, src, dst) })
}

// runVerify runs the binary's verify with --json on the given tables.
func runVerify(t *testing.T, src, dst *pgtest.Cluster, args ...string) (Result, verify.Report) {
	t.Helper()
	res := runCLI(t, nil, append([]string{"verify", "--json", "--source", src.DSN("app"), "--target", dst.DSN("app")}, args...)...)
	var rep verify.Report
	if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil {
		t.Fatalf("verify --json output does not parse: %v\nstdout: %s\nstderr: %s", err, res.Stdout, res.Stderr)
	}
	return res, rep
}

func onlyTable(t *testing.T, rep verify.Report) verify.TableReport {
	t.Helper()
	if len(rep.Databases) != 1 || len(rep.Databases[0].Tables) != 1 {
		t.Fatalf("want one database with one table, got %+v", rep)
	}
	return rep.Databases[0].Tables[0]
}

func rowKeys(tr verify.TableReport) []string {
	var out []string
	for _, r := range tr.Ranges {
		for _, row := range r.Rows {
			out = append(out, row.Kind+":"+strings.Join(row.Key, ","))
		}
	}
	slices.Sort(out)
	return out
}

func testVerifyNamesDifferingRows(t *testing.T, src, dst *pgtest.Cluster) {
	tests := []struct {
		name   string
		table  string
		args   []string
		key    []string
		chunks int // minimum
		rows   []string
	}{
		{"flipped byte in a million rows", "app.big", nil, []string{"id"}, 10, []string{"changed:765432"}},
		{"extra row on target", "app.extra", nil, []string{"id"}, 1, []string{"extra_on_target:1001"}},
		{"missing row on target", "app.missing", nil, []string{"id"}, 1, []string{"missing_on_target:500"}},
		{"NULL vs empty string", "app.nulls", nil, []string{"id"}, 1, []string{"changed:1", "changed:2"}},
		{"numeric scale", "app.num", nil, []string{"id"}, 1, []string{"changed:1"}},
		{"quoted identifiers", `app."My Schema"."Táble ""x"""`, nil, []string{`Key "K"`}, 1, []string{"changed:42"}},
		{"partitioned table", "app.part", []string{"--chunk-rows", "3000"}, []string{"id"}, 3, []string{"changed:20000"}},
		{"composite key", "app.comp", []string{"--chunk-rows", "5000"}, []string{"a", "b"}, 5, []string{"changed:7777,k3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, rep := runVerify(t, src, dst, append([]string{"--include-tables", tc.table}, tc.args...)...)
			if res.Code != 1 {
				t.Errorf("exit code = %d, want 1; stderr: %s", res.Code, res.Stderr)
			}
			tr := onlyTable(t, rep)
			if tr.Status != verify.StatusMismatch || !tr.Complete || rep.Match {
				t.Errorf("status = %s, complete = %v, match = %v; want mismatch, complete, no match", tr.Status, tr.Complete, rep.Match)
			}
			if !slices.Equal(tr.Key, tc.key) {
				t.Errorf("key = %q, want %q", tr.Key, tc.key)
			}
			if tr.Chunks < tc.chunks {
				t.Errorf("chunks = %d, want at least %d", tr.Chunks, tc.chunks)
			}
			if got := rowKeys(tr); !slices.Equal(got, tc.rows) {
				t.Errorf("differing rows = %q, want %q", got, tc.rows)
			}
			if tr.DifferingRows != int64(len(tc.rows)) {
				t.Errorf("differing_rows = %d, want %d", tr.DifferingRows, len(tc.rows))
			}
		})
	}
}

func testVerifyTableWithoutKey(t *testing.T, src, dst *pgtest.Cluster) {
	tests := []struct {
		table              string
		srcRows, dstRows   int64
		sameHashIfSameRows bool
	}{
		{"app.nokey_count", 3, 2, false},
		{"app.nokey_hash", 3, 3, false},
	}
	for _, tc := range tests {
		t.Run(tc.table, func(t *testing.T) {
			res, rep := runVerify(t, src, dst, "--include-tables", tc.table)
			if res.Code != 1 {
				t.Errorf("exit code = %d, want 1; stderr: %s", res.Code, res.Stderr)
			}
			tr := onlyTable(t, rep)
			if tr.Status != verify.StatusMismatch || len(tr.Key) != 0 || len(tr.Ranges) != 1 {
				t.Fatalf("got %+v, want one whole-table mismatch without key", tr)
			}
			r := tr.Ranges[0]
			if r.SourceRows != tc.srcRows || r.TargetRows != tc.dstRows {
				t.Errorf("rows = %d vs %d, want %d vs %d", r.SourceRows, r.TargetRows, tc.srcRows, tc.dstRows)
			}
			if r.SourceHash == r.TargetHash {
				t.Errorf("hashes are equal (%s) for different multisets", r.SourceHash)
			}
		})
	}
}

func testVerifyExitCodesAndText(t *testing.T, src, dst *pgtest.Cluster) {
	t.Run("all match exits 0", func(t *testing.T) {
		res, rep := runVerify(t, src, dst, "--include-tables", "app.same,app.nulls", "--jobs", "2")
		// nulls differs: use same alone for the match, and check the pair run finds only nulls.
		if res.Code != 1 || rep.Databases[0].Tables[1].Status != verify.StatusMatch {
			t.Errorf("same+nulls: code %d, tables %+v", res.Code, rep.Databases[0].Tables)
		}
		res, rep = runVerify(t, src, dst, "--include-tables", "app.same")
		if res.Code != 0 || !rep.Match {
			t.Fatalf("exit code = %d, match = %v, want 0 and true; stderr: %s", res.Code, rep.Match, res.Stderr)
		}
		if tr := onlyTable(t, rep); tr.SourceRows != 5000 || tr.TargetRows != 5000 {
			t.Errorf("rows = %d/%d, want 5000/5000", tr.SourceRows, tr.TargetRows)
		}
	})
	t.Run("text output names the key", func(t *testing.T) {
		res := runCLI(t, nil, "verify", "--source", src.DSN("app"), "--target", dst.DSN("app"), "--include-tables", "app.missing")
		if res.Code != 1 {
			t.Fatalf("exit code = %d, want 1; stderr: %s", res.Code, res.Stderr)
		}
		for _, want := range []string{"public.missing", "mismatch", "missing on target", "id=500"} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, res.Stdout)
			}
		}
	})
	t.Run("limit on named rows", func(t *testing.T) {
		res, rep := runVerify(t, src, dst, "--include-tables", "app.many", "--max-diff-rows", "7", "--chunk-rows", "2000")
		if res.Code != 1 {
			t.Fatalf("exit code = %d, want 1", res.Code)
		}
		tr := onlyTable(t, rep)
		if tr.Complete || tr.DifferingRows != 7 || tr.SourceRows-tr.TargetRows != 50 {
			t.Errorf("complete = %v, differing = %d, rows %d/%d; want incomplete, 7, 50 fewer", tr.Complete, tr.DifferingRows, tr.SourceRows, tr.TargetRows)
		}
	})
	t.Run("table missing on target", func(t *testing.T) {
		src.Exec("app", "CREATE TABLE IF NOT EXISTS only_source (id int PRIMARY KEY)")
		res, rep := runVerify(t, src, dst, "--include-tables", "app.only_source")
		if tr := onlyTable(t, rep); res.Code != 1 || tr.Status != verify.StatusError || !strings.Contains(tr.Error, "only_source") {
			t.Errorf("code %d, table %+v; want 1 and an error naming the table", res.Code, tr)
		}
	})
	t.Run("bad flag is a usage error", func(t *testing.T) {
		res := runCLI(t, nil, "verify", "--source", src.DSN("app"), "--target", dst.DSN("app"), "--jobs", "0")
		if res.Code != 2 || !strings.Contains(res.Stderr, "--jobs") {
			t.Errorf("exit code = %d, stderr %q; want 2 naming --jobs", res.Code, res.Stderr)
		}
	})
}

// holdWriterLock plays a running sync for verify: a target session holding
// the slot's writer lock, as the applier's session does (apply/writer.go).
// The returned func releases it.
func holdWriterLock(t *testing.T, c *pgtest.Cluster, db, slot string) (release func()) {
	t.Helper()
	conn := c.Connect(db)
	if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_lock(hashtextextended('postgres-seren-replicator/' || $1, 0))`, slot); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_unlock(hashtextextended('postgres-seren-replicator/' || $1, 0))`, slot); err != nil {
			t.Error(err)
		}
	}
}

// TestVerifyWaitsForCheckpoint simulates a running sync: the target has a
// checkpoint that lags the source, a session holds the writer lock, and a
// goroutine plays the applier.
func TestVerifyWaitsForCheckpoint(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	for _, c := range []*pgtest.Cluster{src, dst} {
		c.Exec("postgres", "CREATE DATABASE app")
		c.Exec("app", "CREATE TABLE cons (id int PRIMARY KEY, v int); INSERT INTO cons SELECT g, g FROM generate_series(1, 1000) g")
	}
	store := checkpoint.Store{}
	const slot = "verify_test_slot"
	// setCheckpoint plays the applier: optional SQL and the checkpoint in one transaction.
	setCheckpoint := func(lsn string, sql string) error {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dst.DSN("app"))
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if sql != "" {
			if _, err := tx.Exec(ctx, sql); err != nil {
				return err
			}
		}
		l, err := pglogrepl.ParseLSN(lsn)
		if err != nil {
			return err
		}
		if err := store.Save(ctx, tx, checkpoint.Position{Slot: slot, EndLSN: l}); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	if err := store.Ensure(context.Background(), dst.Connect("app")); err != nil {
		t.Fatal(err)
	}
	release := holdWriterLock(t, dst, "app", slot)
	run := func(t *testing.T, v *verify.Verifier) verify.TableReport {
		t.Helper()
		s, _ := conninfo.Parse(src.DSN("app"))
		d, _ := conninfo.Parse(dst.DSN("app"))
		f, err := selection.New(nil, nil, []string{"app.cons"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		p, err := plan.Resolve(context.Background(), s, d, f)
		if err != nil {
			t.Fatal(err)
		}
		v.Slot = slot
		rep, err := v.Database(context.Background(), p.Databases[0])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(rep.Consistency, slot) {
			t.Errorf("consistency = %q, want it to name the slot", rep.Consistency)
		}
		return rep.Tables[0]
	}

	t.Run("waits for the applier", func(t *testing.T) {
		if err := setCheckpoint("0/1", ""); err != nil {
			t.Fatal(err)
		}
		src.Exec("app", "UPDATE cons SET v = -v WHERE id = 10")
		done := make(chan struct{})
		go func() { // the applier: catches up a second later
			defer close(done)
			time.Sleep(time.Second)
			var lsn string
			conn, err := pgx.Connect(context.Background(), src.DSN("app"))
			if err == nil {
				err = conn.QueryRow(context.Background(), "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn)
				conn.Close(context.Background())
			}
			if err == nil {
				err = setCheckpoint(lsn, "UPDATE cons SET v = -v WHERE id = 10")
			}
			if err != nil {
				t.Error(err)
			}
		}()
		t.Cleanup(func() { <-done })
		v := verify.New()
		v.Wait, v.Retries = 20*time.Second, 0 // without the wait this would be a mismatch
		start := time.Now()
		tr := run(t, v)
		<-done
		if tr.Status != verify.StatusMatch {
			t.Errorf("status = %s (%+v), want match after waiting", tr.Status, tr.Ranges)
		}
		if el := time.Since(start); el < time.Second {
			t.Errorf("verify took %s: it cannot have waited for the applier", el)
		}
	})

	t.Run("retries when the target moved ahead", func(t *testing.T) {
		src.Exec("app", "UPDATE cons SET v = 0 WHERE id = 20")
		if err := setCheckpoint("FFFFFFFF/0", ""); err != nil { // far ahead: no waiting, data still old
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			time.Sleep(700 * time.Millisecond)
			if err := setCheckpoint("FFFFFFFF/0", "UPDATE cons SET v = 0 WHERE id = 20"); err != nil {
				t.Error(err)
			}
		}()
		t.Cleanup(func() { <-done })
		v := verify.New()
		v.Retries, v.RetryDelay = 10, 300*time.Millisecond
		tr := run(t, v)
		<-done
		if tr.Status != verify.StatusMatch || tr.Retries == 0 {
			t.Errorf("status = %s, retries = %d; want match after at least one retry", tr.Status, tr.Retries)
		}
	})

	t.Run("genuine mismatch is reported after retries", func(t *testing.T) {
		dst.Exec("app", "UPDATE cons SET v = 12345 WHERE id = 30")
		if err := setCheckpoint("0/1", ""); err != nil { // stuck behind: sync not running
			t.Fatal(err)
		}
		v := verify.New()
		v.Wait, v.Retries, v.RetryDelay = 500*time.Millisecond, 2, 50*time.Millisecond
		tr := run(t, v)
		if tr.Status != verify.StatusMismatch || fmt.Sprint(rowKeys(tr)) != "[changed:30]" {
			t.Errorf("status = %s, rows = %q; want mismatch naming row 30", tr.Status, rowKeys(tr))
		}
		if tr.Retries < 2 {
			t.Errorf("retries = %d, want at least 2", tr.Retries)
		}
	})

	t.Run("re-check time bounds the re-checks", func(t *testing.T) {
		dst.Exec("app", "UPDATE cons SET v = -v WHERE id BETWEEN 100 AND 199")
		t.Cleanup(func() { dst.Exec("app", "UPDATE cons SET v = -v WHERE id BETWEEN 100 AND 199") })
		v := verify.New()
		v.Wait, v.Retries, v.RecheckTime = 0, 0, time.Second // the time goes to re-reading rows
		start := time.Now()
		tr := run(t, v)
		if el := time.Since(start); el > 10*time.Second {
			t.Errorf("verify took %s with a re-check time of 1s", el)
		}
		unconfirmed := 0
		for _, r := range tr.Ranges {
			for _, row := range r.Rows {
				if row.Unconfirmed {
					unconfirmed++
				}
			}
		}
		// 101 rows differ (30 and 100..199); re-reading one takes about 1s.
		if tr.Status != verify.StatusMismatch || tr.DifferingRows != 100 || unconfirmed < 90 || tr.Unconfirmed {
			t.Errorf("status %s, %d rows named, %d unconfirmed, table unconfirmed %v; want mismatch, 100, most unconfirmed, some confirmed",
				tr.Status, tr.DifferingRows, unconfirmed, tr.Unconfirmed)
		}
	})

	t.Run("without a sync the sides are compared once", func(t *testing.T) {
		release()
		v := verify.New() // a 30s wait for a checkpoint that cannot move, unless verify sees no sync
		start := time.Now()
		tr := run(t, v)
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("verify took %s without a sync", el)
		}
		if tr.Status != verify.StatusMismatch || fmt.Sprint(rowKeys(tr)) != "[changed:30]" || tr.Retries != 0 || tr.Unconfirmed {
			t.Errorf("status = %s, rows = %q, retries %d, unconfirmed %v; want a confirmed mismatch naming row 30 without retries",
				tr.Status, rowKeys(tr), tr.Retries, tr.Unconfirmed)
		}
	})
	t.Run("a sync applying during a direct comparison leaves differences unconfirmed", func(t *testing.T) {
		v := verify.New()
		// Once the table is compared, a sync (between reconnections when
		// verify looked) applies a batch.
		v.Progress = tableDoneHook(func() {
			if err := setCheckpoint("0/2", ""); err != nil {
				t.Error(err)
			}
		})
		tr := run(t, v)
		if tr.Status != verify.StatusMismatch || !tr.Unconfirmed || len(tr.Ranges) != 1 || !tr.Ranges[0].Rows[0].Unconfirmed {
			t.Errorf("status = %s, unconfirmed %v, ranges %+v; want a mismatch marked unconfirmed", tr.Status, tr.Unconfirmed, tr.Ranges)
		}
	})
}

// tableDoneHook is a verify.Progress that calls f when a table is done.
type tableDoneHook func()

func (tableDoneHook) Start(string, int, int64) {}
func (tableDoneHook) Rows(int64)               {}
func (h tableDoneHook) TableDone()             { h() }
func (tableDoneHook) Finish()                  {}
