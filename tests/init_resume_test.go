package tests

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// resumeSchema has tables copied in one piece before the big one (parent,
// mid: bigger than a piece), a big table split into many pieces, small
// tables copied last, foreign keys in every direction between them (a table
// that keeps its copy referencing one copied again, and the reverse), and a
// view on the big table, which must survive its table being emptied.
const resumeSchema = `
CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO parent SELECT g, repeat(md5(g::text), 2) FROM generate_series(1, 4000) g;
CREATE TABLE small1 (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO small1 SELECT g, 0 FROM generate_series(1, 1000) g;
CREATE TABLE mid (id int PRIMARY KEY, small1_id int NOT NULL REFERENCES small1, v int NOT NULL, pad text);
INSERT INTO mid SELECT g, 1 + g % 1000, 0, repeat(md5(g::text), 2) FROM generate_series(1, 4000) g;
CREATE TABLE big (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent, pad text);
INSERT INTO big SELECT g, 1 + g % 4000, repeat(md5(g::text), 3) FROM generate_series(1, 150000) g;
CREATE TABLE small2 (id int PRIMARY KEY, big_id int NOT NULL REFERENCES big ON DELETE CASCADE, v int NOT NULL);
INSERT INTO small2 SELECT g, g, 0 FROM generate_series(1, 2000) g;
CREATE VIEW big_tens AS SELECT id, parent_id FROM big WHERE id % 10 = 0;
`

var resumeTables = []string{"parent", "small1", "mid", "big", "small2"}

// resumeWriter changes every table of resumeSchema, one transaction at a
// time, until stopped: inserts, updates, deletes (cascading), upserts.
func resumeWriter(t *testing.T, c *pgtest.Cluster, db string) (stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	n := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := pgx.Connect(ctx, c.DSN(db))
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		rng := rand.New(rand.NewPCG(14, 14))
		for next := 1_000_000; ctx.Err() == nil; next++ {
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				b := &pgx.Batch{}
				b.Queue("INSERT INTO big (id, parent_id, pad) VALUES ($1, $2, 'live')", next, 1+rng.IntN(4000))
				b.Queue("UPDATE big SET pad = md5(pad) WHERE id = $1", 1+rng.IntN(150000))
				b.Queue("DELETE FROM big WHERE id = $1", 1+rng.IntN(3000))
				b.Queue("UPDATE parent SET name = md5(name) WHERE id = $1", 1+rng.IntN(4000))
				b.Queue("INSERT INTO small2 (id, big_id, v) SELECT $1, id, 1 FROM big WHERE id = $2", next, 1+rng.IntN(150000))
				b.Queue("UPDATE mid SET v = v + 1, small1_id = $2 WHERE id = $1", 1+rng.IntN(4000), 1+rng.IntN(1200))
				b.Queue("INSERT INTO small1 (id, v) VALUES ($1, 0) ON CONFLICT (id) DO UPDATE SET v = small1.v + 1", 1+rng.IntN(1200))
				return tx.SendBatch(ctx, b).Close()
			})
			if err == nil {
				n++
			}
			// mid may point at a small1 row the same batch creates later:
			// such a transaction fails and is simply not counted.
		}
	}()
	return func() int {
		cancel()
		wg.Wait()
		return n
	}
}

// TestInitResumesAfterKill kills init with SIGKILL at about 30 %, 60 % and
// 90 % of its copy while the source takes writes, runs init again and then
// sync --catch-up: the second init must resume (the tables whose copy
// completed keep it, the others are copied again), and the target must end
// equal to the source row for row, with its foreign keys made. At those
// points the big table is still being copied; at the last one ("big") the
// copy of a small table is held on a target lock until the big table's copy
// has completed, so the big one is kept and the small ones copied again. At
// "post-data" the index build of one table is held on a target lock while
// the others' indexes are made: the second init keeps every table and
// finishes the post-data schema. make test runs 60 % in replica mode
// (superuser target) and the other two points in ordered mode (a target
// role with CREATEDB only); make test-long runs every point in both modes.
func TestInitResumesAfterKill(t *testing.T) {
	modes := map[string][]int{"replica": {60}, "ordered": {afterBig, inPostData}}
	if os.Getenv("SEREN_LONG_TESTS") != "" {
		modes["replica"] = []int{30, 60, 90, afterBig, inPostData}
		modes["ordered"] = modes["replica"]
	}
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			src, dst := pgtestPair(t)
			target := dst.DSN
			if mode == "ordered" {
				dst.CreateRole("migrator", "migrator-pw", "CREATEDB", "CREATEROLE")
				target = func(db string) string { return dst.URL("migrator", "migrator-pw", db) }
			}
			for _, pct := range modes[mode] {
				name := fmt.Sprintf("%d%%", pct)
				switch pct {
				case afterBig:
					name = "big"
				case inPostData:
					name = "post-data"
				}
				t.Run(name, func(t *testing.T) {
					resumeAfterKill(t, src, dst, resumeDB(pct), pct, target)
				})
			}
		})
	}
}

// Kill points other than a percentage of the copy: once the big table's
// copy completed, and while the post-data schema is being built.
const (
	afterBig   = 0
	inPostData = -1
)

func resumeAfterKill(t *testing.T, src, dst *pgtest.Cluster, db string, pct int, target func(string) string) {
	start := time.Now()
	src.Exec("postgres", "CREATE DATABASE "+db)
	src.Exec(db, resumeSchema)
	total := 0
	for _, tbl := range resumeTables {
		var n int
		fmt.Sscan(src.QueryString(db, "SELECT count(*) FROM "+tbl), &n)
		total += n
	}
	stopWriter := resumeWriter(t, src, db)
	defer stopWriter()
	// Many pieces and two jobs: the copy lasts long enough to stop it where
	// wanted, and completes some tables before others.
	args := []string{"init", "--yes", "--source", src.DSN(db), "--target", target(db), "--jobs", "2", "--chunk-bytes", "262144"}
	cmd := exec.Command(binary, args...)
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var copied int
	var release func()
	switch pct {
	case afterBig:
		copied = waitBigCopied(t, dst, db, exited)
	case inPostData:
		copied, release = waitPostData(t, dst, db, exited)
	default:
		copied = waitCopied(t, dst, db, total, pct, exited)
	}
	cmd.Process.Kill()
	if err := <-exited; err == nil {
		t.Fatalf("init finished before it was killed at %d%%: make the copy longer\n%s", pct, out.String())
	}
	if release != nil {
		release()
	}
	t.Logf("killed init with %d of %d rows copied (%.0f%%)", copied, total, 100*float64(copied)/float64(total))
	if got := dst.QueryString(db, `SELECT to_regclass('seren_replicator.checkpoint') IS NULL`); got != "true" {
		t.Fatalf("a killed init recorded its checkpoint")
	}
	time.Sleep(300 * time.Millisecond) // writes while init is down

	res := runCLI(t, nil, args...)
	if res.Code != 0 {
		t.Fatalf("init after the kill: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	resumed := strings.Contains(res.Stdout, "Resuming the unfinished init")
	t.Logf("second init:\n%s", grepLines(res.Stdout, "Resuming", "kept (copy", "copied again", "init resumed"))
	if !resumed && (pct >= 60 || pct <= afterBig || !strings.Contains(res.Stderr, "no table's copy had completed")) {
		t.Fatalf("init after a kill at %d%% did not resume:\nstdout:\n%s\nstderr:\n%s", pct, res.Stdout, res.Stderr)
	}
	states := dst.QueryString(db, `SELECT string_agg(table_name || ':' || state, ',' ORDER BY table_name) FROM seren_replicator.tables`)
	switch {
	case pct == inPostData:
		if !strings.Contains(res.Stdout, "copied again:         none") || strings.Contains(states, ":copied") {
			t.Errorf("init killed while building the post-data schema: the second init must keep every table; states %s\n%s", states, res.Stdout)
		}
		if !strings.Contains(res.Stderr, "finishing the post-data schema the unfinished init started") || strings.Contains(res.Stderr, "built=0") {
			t.Errorf("the second init does not say it kept the post-data objects the first one built:\n%s", res.Stderr)
		}
		t.Log(grepLines(res.Stderr, "finishing the post-data"))
	case pct == afterBig && !strings.Contains(states, ":copied"):
		// The small tables' copy can complete before the test's lock on
		// small1 is granted: then every table is kept, the big one too.
		if !strings.Contains(states, "big:streaming") {
			t.Errorf("table states after the resumed init = %s, want big kept (streaming)", states)
		}
		t.Logf("every table's copy had completed before the kill: all kept")
	case resumed && (!strings.Contains(states, ":streaming") || !strings.Contains(states, ":copied")):
		t.Errorf("table states after the resumed init = %s, want tables kept (streaming) and copied again (copied)", states)
	}
	time.Sleep(300 * time.Millisecond) // writes after init
	writes := stopWriter()

	catch := runCLI(t, nil, "sync", "--catch-up", "--source", src.DSN(db), "--target", target(db))
	if catch.Code != 0 {
		t.Fatalf("sync --catch-up: exit %d\n%s", catch.Code, catch.Stderr)
	}
	assertSameRowsMD5(t, src, dst, db, resumeTables)
	fks := `SELECT string_agg(conrelid::regclass || '>' || confrelid::regclass, ',' ORDER BY conrelid::regclass::text) FROM pg_constraint WHERE contype = 'f'`
	if got, want := dst.QueryString(db, fks), src.QueryString(db, fks); got != want {
		t.Errorf("foreign keys on the target: %s, on the source: %s", got, want)
	}
	idx := `SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'`
	if got, want := dst.QueryString(db, idx), src.QueryString(db, idx); got != want {
		t.Errorf("%s indexes on the target, %s on the source", got, want)
	}
	if got := dst.QueryString(db, `SELECT count(*) FROM big_tens`); got != src.QueryString(db, `SELECT count(*) FROM big_tens`) {
		t.Errorf("view big_tens has %s rows on the target", got)
	}
	if got := src.QueryString(db, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, db); got != "1" {
		t.Errorf("%s slots on the source, want the migration's", got)
	}
	t.Logf("%d source transactions during the test; %.1fs", writes, time.Since(start).Seconds())
}

// waitCopied waits until init has copied pct percent of total rows (its
// progress rows on the target), and returns the rows copied.
func waitCopied(t *testing.T, dst *pgtest.Cluster, db string, total, pct int, exited <-chan error) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("init did not reach %d%% of its copy", pct)
		case err := <-exited:
			t.Fatalf("init ended (%v) before it was killed at %d%%: make the copy longer", err, pct)
		default:
		}
		if conn == nil {
			conn, _ = pgx.Connect(ctx, dst.DSN(db))
		}
		if conn != nil {
			var rows int
			err := conn.QueryRow(ctx, `SELECT COALESCE(sum(rows), 0) FROM seren_replicator.init_progress
				WHERE piece <> '' AND piece <> 'large objects' AND piece NOT LIKE ':%'`).Scan(&rows)
			if err == nil && rows*100 >= total*pct {
				return rows
			}
			if err != nil && conn.IsClosed() {
				conn = nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitBigCopied holds the copy of small1 on a target lock until the big
// table's copy has completed, and returns the rows copied by then.
func waitBigCopied(t *testing.T, dst *pgtest.Cluster, db string, exited <-chan error) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var conn *pgx.Conn
	for conn == nil {
		select {
		case <-ctx.Done():
			t.Fatal("init did not restore its schema")
		case err := <-exited:
			t.Fatalf("init ended (%v) before its copy started", err)
		case <-time.After(5 * time.Millisecond):
		}
		conn, _ = pgx.Connect(ctx, dst.DSN(db))
	}
	defer conn.Close(context.Background())
	for {
		// small1 exists once the pre-data schema is restored, before the
		// copy, which takes the small tables last.
		var ready bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM seren_replicator.init_progress WHERE piece = ':pre-data')`).Scan(&ready)
		if err == nil && ready {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("init did not restore its schema")
		case err := <-exited:
			t.Fatalf("init ended (%v) before its copy started", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `LOCK TABLE small1 IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	probe := dst.Connect(db)
	for {
		var big bool
		var rows int
		err := probe.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM seren_replicator.tables WHERE table_name = 'big' AND state = 'copied'),
			(SELECT COALESCE(sum(rows), 0) FROM seren_replicator.init_progress WHERE piece <> '' AND piece NOT LIKE ':%')`).Scan(&big, &rows)
		if err != nil {
			t.Fatal(err)
		}
		if big {
			return rows
		}
		select {
		case <-ctx.Done():
			t.Fatal("the big table's copy did not complete")
		case err := <-exited:
			t.Fatalf("init ended (%v) while a table's copy was held", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitPostData holds the post-data schema of small2 (its primary key and
// foreign key) on a target lock that the copy does not conflict with, and
// waits until the other tables' indexes are being made. It returns the rows
// copied and a function that ends the restore's sessions left by the killed
// init, then releases the lock.
func waitPostData(t *testing.T, dst *pgtest.Cluster, db string, exited <-chan error) (int, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var conn *pgx.Conn
	wait := func(what string, cond func() bool) {
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("init did not reach %s", what)
			case err := <-exited:
				t.Fatalf("init ended (%v) before %s", err, what)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	wait("its schema", func() bool {
		if conn == nil {
			conn, _ = pgx.Connect(ctx, dst.DSN(db))
		}
		var ready bool
		return conn != nil && conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM seren_replicator.init_progress WHERE piece = ':pre-data')`).Scan(&ready) == nil && ready
	})
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE small2 IN ROW EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	probe := dst.Connect(db)
	var rows int
	wait("the post-data schema", func() bool {
		var built bool
		err := probe.QueryRow(ctx, `SELECT to_regclass('public.big_pkey') IS NOT NULL AND to_regclass('public.parent_pkey') IS NOT NULL,
			(SELECT COALESCE(sum(rows), 0) FROM seren_replicator.init_progress WHERE piece <> '' AND piece NOT LIKE ':%')`).Scan(&built, &rows)
		return err == nil && built
	})
	return rows, func() {
		if _, err := tx.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`); err != nil {
			t.Fatal(err)
		}
		tx.Rollback(context.Background())
		conn.Close(context.Background())
	}
}

// grepLines keeps the lines of s that contain one of subs.
func grepLines(s string, subs ...string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(line, sub) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func resumeDB(pct int) string {
	switch pct {
	case afterBig:
		return "rsbig"
	case inPostData:
		return "rspost"
	}
	return fmt.Sprintf("rs%d", pct)
}

// A failed init with --keep-failed keeps its slot and what it copied, and
// running init again resumes it: here the copy of a table whose row-level
// security policy hides rows from the source role fails after another
// table's copy completed; once the role may bypass the policy, the second
// init keeps the first table and copies only the other.
func TestInitKeepFailedResumes(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE kf")
	src.CreateRole("migrator", "migrator-pw", "REPLICATION")
	src.Exec("kf", `GRANT CREATE ON DATABASE kf TO migrator;
		CREATE TABLE open (id int PRIMARY KEY, v text);
		INSERT INTO open SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 20000) g;
		CREATE TABLE secrets (id int PRIMARY KEY, tenant int NOT NULL, v text);
		INSERT INTO secrets SELECT g, g % 4, 'v' || g FROM generate_series(1, 1000) g;
		ALTER TABLE open OWNER TO migrator; ALTER TABLE secrets OWNER TO migrator;
		ALTER TABLE secrets ENABLE ROW LEVEL SECURITY; ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
		CREATE POLICY one_tenant ON secrets USING (tenant = 0);`)
	// One job: the bigger table is copied first and completes.
	args := []string{"init", "--yes", "--source", src.URL("migrator", "migrator-pw", "kf"), "--target", dst.DSN("kf"), "--jobs", "1"}
	res := runCLI(t, nil, append(args, "--keep-failed")...)
	if res.Code == 0 || !strings.Contains(res.Stderr, "running init again resumes") {
		t.Fatalf("init --keep-failed through the policy: exit %d, want a failure that says init resumes\n%s", res.Code, res.Stderr)
	}
	if got := src.QueryString("kf", "SELECT count(*) FROM pg_replication_slots"); got != "1" {
		t.Fatalf("--keep-failed left %s slots, want its slot", got)
	}
	if got := dst.QueryString("kf", "SELECT string_agg(table_name || ':' || state, ',') FROM seren_replicator.tables"); got != "open:copied" {
		t.Fatalf("table states after the failure = %q, want open:copied", got)
	}
	v := runCLI(t, nil, "validate", "--source", src.DSN("kf"), "--target", dst.DSN("kf"))
	if !strings.Contains(v.Stdout, "an unfinished init of it is on the target; init resumes that init") {
		t.Errorf("validate does not say init resumes the unfinished one:\n%s", v.Stdout)
	}
	src.Exec("kf", "UPDATE open SET v = 'changed' WHERE id <= 10; INSERT INTO secrets VALUES (5000, 0, 'new')")
	src.Exec("postgres", "ALTER ROLE migrator BYPASSRLS")
	res = runCLI(t, nil, args...)
	if res.Code != 0 {
		t.Fatalf("init after the failure: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stdout, "kept (copy complete): public.open") || !strings.Contains(res.Stdout, "copied again:         public.secrets") {
		t.Fatalf("the second init did not resume keeping open:\n%s", res.Stdout)
	}
	catchUp(t, src, dst, "kf")
	assertSameRowsMD5(t, src, dst, "kf", []string{"open", "secrets"})
}

// A resumed init of the rich schema ends as a whole one does: the copy of
// a partition is held on a target lock until every other table's copy has
// completed, init is killed, and the second init copies the partitioned
// table again (its partitions emptied first) and builds everything after
// the copy — large objects, indexes, constraints, triggers, privileges,
// owners, sequences, materialized views — as on the source.
func TestInitResumesRichSchema(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE shop")
	src.Exec("shop", richSchema)
	args := initArgs(src, dst, "shop", "shop", "--jobs", "2", "--replica-identity-full")
	cmd := exec.Command(binary, args...)
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ctx := context.Background()
	var conn *pgx.Conn
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for !cond() {
			select {
			case err := <-exited:
				t.Fatalf("init ended (%v) before %s:\n%s", err, what, out.String())
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("init did not reach %s:\n%s", what, out.String())
			}
		}
	}
	waitFor("its schema", func() bool {
		if conn == nil {
			conn, _ = pgx.Connect(ctx, dst.DSN("shop"))
		}
		var ready bool
		return conn != nil && conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM seren_replicator.init_progress WHERE piece = ':pre-data')`).Scan(&ready) == nil && ready
	})
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE app.events_2024_b IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	probe := dst.Connect("shop")
	waitFor("every other table's copy", func() bool {
		// Seven tables are selected (app.events with its partitions is one).
		var n int
		return probe.QueryRow(ctx, `SELECT count(*) FROM seren_replicator.tables WHERE state = 'copied'`).Scan(&n) == nil && n == 6
	})
	cmd.Process.Kill()
	<-exited
	tx.Rollback(ctx)

	res := runCLI(t, nil, args...)
	if res.Code != 0 {
		t.Fatalf("init after the kill: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("second init:\n%s", grepLines(res.Stdout, "Resuming", "kept (copy", "copied again", "init resumed"))
	if !strings.Contains(res.Stdout, "copied again:         app.events\n") {
		t.Fatalf("the second init did not resume copying app.events again:\n%s", res.Stdout)
	}
	assertSameRows(t, src, dst, "shop", "shop", richTables)
	for _, c := range []struct{ name, sql string }{
		{"large objects", `SELECT string_agg(l.oid || ' ' || pg_get_userbyid(l.lomowner) || ' ' || coalesce(l.lomacl::text, '-') || ' ' || md5(lo_get(l.oid)), ',' ORDER BY l.oid) FROM pg_largeobject_metadata l`},
		{"sequence", `SELECT last_value || ' ' || is_called FROM app.counter`},
		{"serial", `SELECT last_value || ' ' || is_called FROM app.orders_id_seq`},
		{"indexes", `SELECT string_agg(indexdef, ';' ORDER BY indexdef) FROM pg_indexes WHERE schemaname = 'app'`},
		{"constraints", `SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), ';' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'app'::regnamespace`},
		{"triggers", `SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE NOT tgisinternal`},
		{"owner", `SELECT tableowner FROM pg_tables WHERE schemaname = 'app' AND tablename = 'customers'`},
		{"grants", `SELECT string_agg(grantee || ' ' || privilege_type, ',' ORDER BY grantee, privilege_type) FROM information_schema.role_table_grants WHERE table_schema = 'app' AND table_name = 'customers'`},
	} {
		if got, want := dst.QueryString("shop", c.sql), src.QueryString("shop", c.sql); got != want {
			t.Errorf("%s: target %q, source %q", c.name, got, want)
		}
	}
	catchUp(t, src, dst, "shop")
	assertSameRows(t, src, dst, "shop", "shop", richTables)
}
