package tests

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Attack: a table swapped into the place of a dropped one while sync
// streams (CREATE x_new AS a copy of x; DROP x; ALTER TABLE x_new RENAME TO
// x). The target keeps the dropped x; the stream's changes of x_new, now
// named x, must not land in that kept copy of the old table.
func TestNewTablesAttackSwapInRenameWhileStreaming(t *testing.T) {
	longTest(t)
	src, dst := pgtestPair(t)
	newTablesFor(t, src)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE x (id int PRIMARY KEY, v text);`, "public.x")
	src.Exec("shop", `INSERT INTO x SELECT g, 'old' FROM generate_series(1, 10) g`)
	catchUp(t, src, dst, "shop")
	daemon := startSync(t, nil, syncArgs(src, dst, "shop", "--table-check-interval", "300ms", "--max-retry-delay", "300ms")...)
	src.Exec("shop", `CREATE TABLE x_new (id int PRIMARY KEY, v text); INSERT INTO x_new SELECT id, 'new' FROM x`)
	eventually(t, 60*time.Second, "x_new to join", func() bool {
		return strings.Contains(syncLog(daemon), "table joined the migration")
	})
	src.Exec("shop", `INSERT INTO x_new VALUES (150, 'new-live')`)
	eventually(t, 30*time.Second, "the live row of x_new", func() bool {
		return dst.QueryString("shop", `SELECT count(*) FROM x_new WHERE id = 150`) == "1"
	})
	src.Exec("shop", `BEGIN; DROP TABLE x; ALTER TABLE x_new RENAME TO x; COMMIT; INSERT INTO x VALUES (200, 'after swap'); UPDATE x SET v = 'upd' WHERE id = 5`)
	time.Sleep(5 * time.Second)
	daemon.Process.Signal(syscall.SIGTERM)
	daemon.Wait()
	t.Logf("sync log:\n%s", syncLog(daemon))
	t.Logf("target x: %s", tableContents(t, dst, "shop", "x"))
	if dst.QueryString("shop", `SELECT to_regclass('x_new') IS NOT NULL`) == "true" {
		t.Logf("target x_new: %s", tableContents(t, dst, "shop", "x_new"))
	}
	if got := dst.QueryString("shop", `SELECT count(*) FROM x WHERE v = 'old'`); got != "0" && dst.QueryString("shop", `SELECT count(*) FROM x WHERE id = 200 OR v = 'upd'`) != "0" {
		t.Errorf("x_new's changes after the swap were applied into the target's kept copy of the dropped x (it still holds %s old rows)", got)
	}
	res := runCLIContext(t, context.Background(), 30*time.Second, nil, syncArgs(src, dst, "shop", "--catch-up")...)
	t.Logf("restart: exit %d\n%s", res.Code, reviewTail(res.Stderr, 4))
}

// Attack: two published tables of the same shape swap names while sync
// streams; each one's later changes must reach its own copy on the target.
func TestNewTablesAttackSwapNamesWhileStreaming(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text);`, "public.a", "public.b")
	src.Exec("shop", `INSERT INTO a SELECT g, 'a' FROM generate_series(1, 5) g; INSERT INTO b SELECT g, 'b' FROM generate_series(1, 5) g`)
	catchUp(t, src, dst, "shop")
	daemon := startSync(t, nil, syncArgs(src, dst, "shop", "--max-retry-delay", "300ms")...)
	src.Exec("shop", `INSERT INTO a VALUES (6, 'a')`)
	eventually(t, 30*time.Second, "streaming", func() bool {
		return dst.QueryString("shop", `SELECT count(*) FROM a WHERE id = 6`) == "1"
	})
	src.Exec("shop", `BEGIN; ALTER TABLE a RENAME TO tmp; ALTER TABLE b RENAME TO a; ALTER TABLE tmp RENAME TO b; COMMIT;
		INSERT INTO a VALUES (7, 'was b'); UPDATE b SET v = 'was a, updated' WHERE id = 1`)
	time.Sleep(5 * time.Second)
	daemon.Process.Signal(syscall.SIGTERM)
	daemon.Wait()
	t.Logf("sync log:\n%s", syncLog(daemon))
	if !strings.Contains(syncLog(daemon), "tables swapped names") {
		t.Errorf("sync did not stop on the swap, naming it")
	}
	// Whatever the target's names, the rows of source a (now b) must stay
	// together: no copy may mix rows of both tables.
	for _, tbl := range []string{"a", "b"} {
		c := tableContents(t, dst, "shop", tbl)
		t.Logf("target %s:\n%s", tbl, c)
		if strings.Contains(c, "was b") && strings.Contains(c, ",a)") || strings.Contains(c, "was a") && strings.Contains(c, ",b)") {
			t.Errorf("target %s mixes rows of both source tables", tbl)
		}
	}
}

// Attack: an add killed (-9) while its COPY runs is redone at the next
// start; the table must end with its primary key and indexes on the target.
func TestNewTablesAttackAddKilledDuringCopyKeepsKey(t *testing.T) {
	longTest(t)
	src, dst := pgtestPair(t)
	newTablesFor(t, src)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE items (id int PRIMARY KEY, v text);`, "public.items")
	catchUp(t, src, dst, "shop")
	src.Exec("shop", `CREATE TABLE big (id int PRIMARY KEY, pad text NOT NULL); CREATE INDEX big_pad ON big (pad);
		INSERT INTO big SELECT g, repeat('p', 80) || g FROM generate_series(1, 1500000) g`)
	daemon := startSync(t, nil, syncArgs(src, dst, "shop", "--table-check-interval", "1h")...)
	killed := false
	for deadline := time.Now().Add(120 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if dst.QueryString("shop", `SELECT to_regclass('public.big') IS NOT NULL`) == "true" {
			daemon.Process.Kill()
			daemon.Wait()
			killed = true
			break
		}
	}
	if !killed {
		t.Fatalf("the table never appeared on the target\n%s", syncLog(daemon))
	}
	t.Logf("at the kill: state %s, indexes %s", dst.QueryString("shop", `SELECT string_agg(state, ',') FROM seren_replicator.tables WHERE table_name = 'big'`),
		dst.QueryString("shop", `SELECT count(*) FROM pg_index WHERE indrelid = 'public.big'::regclass`))
	src.Exec("shop", `UPDATE big SET pad = 'changed' WHERE id <= 5`)
	res := catchUp(t, src, dst, "shop")
	if got := dst.QueryString("shop", `SELECT count(*) FROM seren_replicator.tables WHERE table_name = 'big' AND state = 'copied'`); got != "1" {
		t.Fatalf("big not copied after the restart\n%s", res.Stderr)
	}
	if got := dst.QueryString("shop", `SELECT coalesce(string_agg(indexrelid::regclass::text, ',' ORDER BY 1), '') FROM pg_index WHERE indrelid = 'public.big'::regclass`); got != "big_pad,big_pkey" {
		t.Errorf("after the redone add the target's big has indexes %q, want big_pad,big_pkey (the source's)", got)
	}
	if got := dst.QueryString("shop", `SELECT count(*) FROM big`); got != "1500000" {
		t.Errorf("target big holds %s rows", got)
	}
}

// Attack: an add left unfinished (state copying) for a table that was then
// dropped on the source must not keep sync from streaming forever.
func TestNewTablesAttackUnfinishedAddOfDroppedTable(t *testing.T) {
	src, dst := pgtestPair(t)
	newTablesFor(t, src)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE items (id int PRIMARY KEY, v text);`, "public.items")
	catchUp(t, src, dst, "shop")
	// What a crash mid-add leaves, after which the table was dropped on the source.
	dst.Exec("shop", `INSERT INTO seren_replicator.tables (slot_name, schema_name, table_name, state) VALUES ('seren_shop', 'public', 'ghost', 'copying')`)
	src.Exec("shop", `INSERT INTO items VALUES (1, 'a')`)
	res := runCLIContext(t, context.Background(), 40*time.Second, nil, syncArgs(src, dst, "shop", "--catch-up", "--max-retry-delay", "500ms")...)
	if res.Code != 0 {
		t.Errorf("sync --catch-up exit %d, want 0 (the table is gone: nothing to add)\n%s", res.Code, reviewTail(res.Stderr, 8))
	}
	assertSameTables(t, src, dst, "shop", "items")
}

func reviewTail(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// Attack: a new table with a foreign key to an existing table joins while
// both are written (a parent row and its child in one transaction). The
// target's parent table lags the copy's snapshot (the stream stopped
// before it), so the child's copied rows may reference parents the target
// does not have yet; the add must still end with the table's key and
// foreign key on the target.
func TestNewTablesAttackNewChildOfExistingTable(t *testing.T) {
	src, dst := pgtestPair(t)
	newTablesFor(t, src)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE parent (id int PRIMARY KEY);`, "public.parent")
	src.Exec("shop", `INSERT INTO parent SELECT generate_series(1, 100)`)
	catchUp(t, src, dst, "shop")
	daemon := startSync(t, nil, syncArgs(src, dst, "shop", "--table-check-interval", "300ms", "--max-retry-delay", "300ms")...)
	src.Exec("shop", `CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent)`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		conn := src.Connect("shop")
		n := 1000
		for ctx.Err() == nil {
			n++
			if _, err := conn.Exec(context.Background(), fmt.Sprintf(`INSERT INTO parent VALUES (%d); INSERT INTO child VALUES (%d, %d)`, n, n, n)); err != nil {
				break
			}
		}
		done <- n
	}()
	eventually(t, 60*time.Second, "child to join", func() bool {
		return strings.Contains(syncLog(daemon), "table joined the migration")
	})
	time.Sleep(time.Second)
	cancel()
	t.Logf("%d parent+child transactions", <-done-1000)
	eventually(t, 60*time.Second, "the target to catch up", func() bool {
		return tableContents(t, src, "shop", "child") == tableContents(t, dst, "shop", "child")
	})
	daemon.Process.Signal(syscall.SIGTERM)
	daemon.Wait()
	t.Logf("log:\n%s", syncLog(daemon))
	assertSameTables(t, src, dst, "shop", "parent", "child")
	if got := dst.QueryString("shop", `SELECT coalesce(string_agg(contype::text, ',' ORDER BY contype), '') FROM pg_constraint WHERE conrelid = 'public.child'::regclass`); got != "f,p" {
		t.Errorf("target child has constraints %q, want f,p as on the source", got)
		t.Logf("sync log:\n%s", reviewTail(syncLog(daemon), 15))
	}
}

// Attack: TRUNCATE … CASCADE of an existing table whose new child table
// (created after init, not yet joined) references it, then new rows in
// both, all before the add's copy. The stream replays the TRUNCATE (its
// commit is before the copy's point) after the copy: it must not empty the
// copied child.
func TestNewTablesAttackTruncateCascadeBeforeJoin(t *testing.T) {
	src, dst := pgtestPair(t)
	newTablesFor(t, src)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE parent (id int PRIMARY KEY);`, "public.parent")
	src.Exec("shop", `INSERT INTO parent SELECT generate_series(1, 10)`)
	catchUp(t, src, dst, "shop")
	src.Exec("shop", `CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent)`)
	src.Exec("shop", `TRUNCATE parent CASCADE`)
	src.Exec("shop", `INSERT INTO parent SELECT generate_series(1, 10); INSERT INTO child SELECT g, g FROM generate_series(1, 10) g`)
	res := catchUp(t, src, dst, "shop")
	t.Logf("sync:\n%s", reviewTail(res.Stderr, 8))
	assertSameTables(t, src, dst, "shop", "parent", "child")
}

// Attack: the same with ON DELETE CASCADE in ordered mode (target triggers
// fire): a parent row deleted and inserted again, with its new child row,
// before the copy. Replaying the DELETE after the copy must not delete the
// copied child row.
func TestNewTablesAttackDeleteCascadeBeforeJoinOrdered(t *testing.T) {
	src, dst := pgtestPair(t)
	newTablesFor(t, src)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE parent (id int PRIMARY KEY);`, "public.parent")
	dst.CreateRole("applier", "applier-pw")
	dst.Exec("shop", `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier;
		GRANT CREATE ON DATABASE shop TO applier;
		GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier;
		ALTER TABLE parent OWNER TO applier;`)
	target := fmt.Sprintf("postgres://applier:applier-pw@127.0.0.1:%d/shop?sslmode=disable", dst.Port)
	args := []string{"sync", "--source", src.URL("postgres", "", "shop"), "--target", target, "--catch-up"}
	src.Exec("shop", `INSERT INTO parent SELECT generate_series(1, 10)`)
	if res := runCLI(t, nil, args...); res.Code != 0 {
		t.Fatalf("exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("shop", `CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent ON DELETE CASCADE);
		INSERT INTO child SELECT g, g FROM generate_series(1, 10) g`)
	src.Exec("shop", `DELETE FROM parent WHERE id = 5`)
	src.Exec("shop", `INSERT INTO parent VALUES (5); INSERT INTO child VALUES (5, 5)`)
	res := runCLI(t, nil, args...)
	t.Logf("sync exit %d:\n%s", res.Code, reviewTail(res.Stderr, 8))
	assertSameTables(t, src, dst, "shop", "parent", "child")
}

// Attack: a new table whose schema and name need quoting (capitals, space,
// dot, quote, unicode, pattern characters) joins.
func TestNewTablesAttackNewTableOddNames(t *testing.T) {
	longTest(t)
	src, dst := pgtestPair(t)
	newTablesFor(t, src)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE items (id int PRIMARY KEY);`, "public.items")
	catchUp(t, src, dst, "shop")
	src.Exec("shop", `CREATE SCHEMA "Sch.ema *?"; CREATE TABLE "Sch.ema *?"."Tä""b le$1" (id int PRIMARY KEY, v text);
		INSERT INTO "Sch.ema *?"."Tä""b le$1" VALUES (1, 'x');
		CREATE TABLE public."T_b" (id int PRIMARY KEY); CREATE TABLE public."TXb" (id int PRIMARY KEY); INSERT INTO public."TXb" VALUES (7)`)
	res := catchUp(t, src, dst, "shop")
	src.Exec("shop", `INSERT INTO "Sch.ema *?"."Tä""b le$1" VALUES (2, 'y'); INSERT INTO public."T_b" VALUES (3)`)
	res = catchUp(t, src, dst, "shop")
	t.Logf("%s", reviewTail(res.Stderr, 6))
	assertSameTables(t, src, dst, "shop", `"Sch.ema *?"."Tä""b le$1"`, `public."T_b"`, `public."TXb"`)
}

// Attack: sync killed (-9) at points of an add (state recorded, published,
// copying, copied) under writes to the new table; after a restart the
// table must match row for row. make test kills at two points of a
// smaller table; make test-long at five.
func TestNewTablesAttackAddKilledUnderWrites(t *testing.T) {
	delays, rows := []time.Duration{30 * time.Millisecond, 300 * time.Millisecond}, 50000
	if os.Getenv("SEREN_LONG_TESTS") != "" {
		delays, rows = []time.Duration{0, 30 * time.Millisecond, 120 * time.Millisecond, 300 * time.Millisecond, 600 * time.Millisecond}, 200000
	}
	src, dst := pgtestPair(t)
	newTablesFor(t, src)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE items (id int PRIMARY KEY, v int);`, "public.items")
	src.Exec("shop", `INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g`)
	catchUp(t, src, dst, "shop")
	args := syncArgs(src, dst, "shop", "--table-check-interval", "200ms", "--max-retry-delay", "300ms")
	for i, delay := range delays {
		tbl := fmt.Sprintf("t%d", i)
		daemon := startSync(t, nil, args...)
		src.Exec("shop", fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, v int); INSERT INTO %[1]s SELECT g, 0 FROM generate_series(1, %d) g`, tbl, rows))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			conn := src.Connect("shop")
			for n := 1; ctx.Err() == nil; n++ {
				if _, err := conn.Exec(context.Background(), fmt.Sprintf(`BEGIN; UPDATE %[1]s SET v = v + 1 WHERE id = %[2]d; INSERT INTO %[1]s VALUES (%[3]d, 1); DELETE FROM %[1]s WHERE id = %[4]d; UPDATE items SET v = v + 1 WHERE id = %[5]d; COMMIT`,
					tbl, 1+n%rows, 300000+n, 1+(n*7)%rows, 1+n%100)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		eventually(t, 60*time.Second, "the add to start", func() bool {
			return dst.QueryString("shop", fmt.Sprintf(`SELECT count(*) FROM seren_replicator.tables WHERE table_name = '%s'`, tbl)) == "1"
		})
		time.Sleep(delay)
		daemon.Process.Kill()
		daemon.Wait()
		t.Logf("%s killed %s after the state appeared: state %s", tbl, delay, dst.QueryString("shop", fmt.Sprintf(`SELECT state FROM seren_replicator.tables WHERE table_name = '%s'`, tbl)))
		daemon = startSync(t, nil, args...)
		eventually(t, 90*time.Second, "the add to finish", func() bool {
			return dst.QueryString("shop", fmt.Sprintf(`SELECT count(*) FROM seren_replicator.tables WHERE table_name = '%s' AND state = 'copied'`, tbl)) == "1"
		})
		time.Sleep(time.Second)
		cancel()
		<-done
		eventually(t, 60*time.Second, "convergence", func() bool {
			return tableContents(t, src, "shop", tbl) == tableContents(t, dst, "shop", tbl) && tableContents(t, src, "shop", "items") == tableContents(t, dst, "shop", "items")
		})
		daemon.Process.Signal(syscall.SIGTERM)
		daemon.Wait()
	}
}

// Attack: short-lived tables (an ETL's staging table created and dropped
// over and over) while sync streams must not stop it for good.
func TestNewTablesAttackShortLivedTables(t *testing.T) {
	longTest(t)
	src, dst := pgtestPair(t)
	newTablesFor(t, src)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE items (id int PRIMARY KEY);`, "public.items")
	catchUp(t, src, dst, "shop")
	daemon := startSync(t, nil, syncArgs(src, dst, "shop", "--table-check-interval", "100ms", "--max-retry-delay", "300ms")...)
	conn := src.Connect("shop")
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); {
		if _, err := conn.Exec(context.Background(), `CREATE TABLE stg (id int PRIMARY KEY); INSERT INTO stg VALUES (1)`); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(50+time.Now().UnixNano()%200) * time.Millisecond)
		if _, err := conn.Exec(context.Background(), `DROP TABLE stg`); err != nil {
			t.Fatal(err)
		}
	}
	src.Exec("shop", `INSERT INTO items VALUES (42)`)
	defer func() { t.Logf("sync log tail:\n%s", reviewTail(syncLog(daemon), 12)) }()
	eventually(t, 30*time.Second, "a change after the staging tables to arrive", func() bool {
		return dst.QueryString("shop", `SELECT count(*) FROM items WHERE id = 42`) == "1"
	})
	t.Logf("states: %s", dst.QueryString("shop", `SELECT string_agg(table_name || ':' || state, ',') FROM seren_replicator.tables`))
}

// Attack: a new partition of a partitioned table init copied. Its changes
// are published under its own name (the root is published), so sync stops
// naming it, and the advice (create it on the target) works.
func TestNewTablesAttackNewPartitionOfExistingTable(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE m (id int, day date, v int, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
		CREATE TABLE m1 PARTITION OF m FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');`, "public.m")
	src.Exec("shop", `INSERT INTO m VALUES (1, '2026-01-05', 1)`)
	catchUp(t, src, dst, "shop")
	src.Exec("shop", `CREATE TABLE m2 PARTITION OF m FOR VALUES FROM ('2026-02-01') TO ('2026-03-01'); INSERT INTO m VALUES (2, '2026-02-05', 1); UPDATE m SET v = 5 WHERE id = 2`)
	res := runCLI(t, nil, syncArgs(src, dst, "shop", "--catch-up")...)
	if res.Code != 4 || !strings.Contains(res.Stderr, "public.m2 is published on the source but does not exist on the target: create it there") {
		t.Fatalf("exit %d, want 4 naming the new partition\n%s", res.Code, res.Stderr)
	}
	dst.Exec("shop", `CREATE TABLE m2 PARTITION OF m FOR VALUES FROM ('2026-02-01') TO ('2026-03-01')`)
	catchUp(t, src, dst, "shop")
	assertSameTables(t, src, dst, "shop", "m", "m2")
}

// Attack: changes written under a table's old name, then a rename, all
// while sync is stopped. The stream carries the first changes under the old
// name, after sync has renamed the target table at its start.
func TestNewTablesAttackRenameAfterChangesWhileStopped(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE a (id int PRIMARY KEY, v text);`, "public.a")
	src.Exec("shop", `INSERT INTO a VALUES (1, 'x')`)
	catchUp(t, src, dst, "shop")
	src.Exec("shop", `INSERT INTO a VALUES (2, 'before rename'); ALTER TABLE a RENAME TO b; INSERT INTO b VALUES (3, 'after rename')`)
	res := runCLIContext(t, context.Background(), 60*time.Second, nil, syncArgs(src, dst, "shop", "--catch-up", "--max-retry-delay", "300ms")...)
	t.Logf("exit %d\n%s", res.Code, reviewTail(res.Stderr, 6))
	assertSameTables(t, src, dst, "shop", "b")
}

// Attack: the same while sync streams: a change under the old name and the
// rename close together (one batch), so the attempt that meets the new name
// has not committed the change under the old one.
func TestNewTablesAttackRenameWithBatchInFlight(t *testing.T) {
	longTest(t)
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE a (id int PRIMARY KEY, v text);`, "public.a")
	src.Exec("shop", `INSERT INTO a VALUES (1, 'x')`)
	catchUp(t, src, dst, "shop")
	daemon := startSync(t, nil, syncArgs(src, dst, "shop", "--max-retry-delay", "300ms", "--max-batch-delay", "2s")...)
	src.Exec("shop", `INSERT INTO a VALUES (0, 'streaming')`)
	eventually(t, 30*time.Second, "streaming", func() bool { return dst.QueryString("shop", `SELECT count(*) FROM a WHERE id = 0`) == "1" })
	src.Exec("shop", `INSERT INTO a VALUES (2, 'before rename')`)
	src.Exec("shop", `ALTER TABLE a RENAME TO b`)
	src.Exec("shop", `INSERT INTO b VALUES (3, 'after rename')`)
	time.Sleep(8 * time.Second)
	t.Logf("sync log:\n%s", reviewTail(syncLog(daemon), 8))
	daemon.Process.Signal(syscall.SIGTERM)
	daemon.Wait()
	assertSameTables(t, src, dst, "shop", "b")
}

// Attack: a change under the old name, the rename and a change under the
// new name in one source transaction, while sync streams.
func TestNewTablesAttackRenameInOneTransactionWhileStreaming(t *testing.T) {
	longTest(t)
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE a (id int PRIMARY KEY, v text);`, "public.a")
	catchUp(t, src, dst, "shop")
	daemon := startSync(t, nil, syncArgs(src, dst, "shop", "--max-retry-delay", "300ms")...)
	src.Exec("shop", `INSERT INTO a VALUES (0, 'streaming')`)
	eventually(t, 30*time.Second, "streaming", func() bool { return dst.QueryString("shop", `SELECT count(*) FROM a WHERE id = 0`) == "1" })
	src.Exec("shop", `BEGIN; INSERT INTO a VALUES (2, 'before rename'); ALTER TABLE a RENAME TO b; INSERT INTO b VALUES (3, 'after rename'); COMMIT`)
	time.Sleep(6 * time.Second)
	t.Logf("sync log:\n%s", reviewTail(syncLog(daemon), 6))
	daemon.Process.Signal(syscall.SIGTERM)
	daemon.Wait()
	assertSameTables(t, src, dst, "shop", "b")
}

// longTest skips a heavy test outside make test-long.
func longTest(t *testing.T) {
	t.Helper()
	if os.Getenv("SEREN_LONG_TESTS") == "" {
		t.Skip("a heavy test: make test-long runs it")
	}
}
