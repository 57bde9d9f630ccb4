package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// newTablesSQL creates, on the source while sync streams, tables the
// selection (the whole database) covers: an identity-keyed table, a
// partitioned one and one in a schema the target does not have yet.
const newTablesSQL = `
CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, acct int NOT NULL, note text);
CREATE TABLE readings (id int NOT NULL, day date NOT NULL, v int, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE readings_a PARTITION OF readings FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
CREATE TABLE readings_b PARTITION OF readings FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');
CREATE SCHEMA audit;
CREATE TABLE audit.log (id serial PRIMARY KEY, what text NOT NULL);
INSERT INTO events (acct, note) SELECT g % 50, 'before ' || g FROM generate_series(1, 3000) g;
INSERT INTO readings SELECT g, date '2026-01-01' + g % 360, g FROM generate_series(1, 2000) g;
`

// newTablesFor adapts newTablesSQL to the source: PostgreSQL 12 cannot
// publish a partitioned table, so there readings is an ordinary one. It
// skips the test when the local pg_dump cannot dump the source.
func newTablesFor(t *testing.T, src *pgtest.Cluster) string {
	t.Helper()
	needPgDump(t, src)
	major, _ := strconv.Atoi(src.QueryString("postgres", "SELECT current_setting('server_version_num')::int / 10000"))
	if major >= 13 {
		return newTablesSQL
	}
	sql := strings.Replace(newTablesSQL, " PARTITION BY RANGE (day)", "", 1)
	var kept []string
	for _, line := range strings.Split(sql, "\n") {
		if !strings.Contains(line, "PARTITION OF") {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}

// newTableWriter keeps changing the new tables while they are copied and
// join the stream: inserts, updates of rows old and new, deletes.
func newTableWriter(t *testing.T, c *pgtest.Cluster, db string) (stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := pgx.Connect(ctx, c.DSN(db))
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		rng := rand.New(rand.NewPCG(5, 5))
		for ctx.Err() == nil {
			b := &pgx.Batch{}
			b.Queue("BEGIN")
			b.Queue("INSERT INTO events (acct, note) VALUES ($1, 'live')", rng.IntN(50))
			b.Queue("UPDATE events SET note = note || '+' WHERE id = $1", 1+rng.IntN(3500))
			b.Queue("DELETE FROM events WHERE id = $1", 1+rng.IntN(3500))
			b.Queue("UPDATE readings SET v = v + 1 WHERE id = $1", 1+rng.IntN(2000))
			b.Queue("INSERT INTO audit.log (what) VALUES ('w')")
			b.Queue("COMMIT")
			if err := conn.SendBatch(ctx, b).Close(); err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
		}
	}()
	return func() int {
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// Tables created on the source while sync runs are copied and join the
// stream, under a write workload on old and new tables alike, in both apply
// modes: no change lost or applied twice, even for the transactions that
// committed while the copy's snapshot was taken.
func TestSyncNewTablesJoinTheStream(t *testing.T) {
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			src, dst := pgtestPair(t)
			newSQL := newTablesFor(t, src)
			prepareStreaming(t, src, dst, "bank", workloadSchema, "public.acct", "public.hist")
			target := dst.URL("postgres", "", "bank")
			if mode == "ordered" {
				dst.CreateRole("applier", "applier-pw")
				dst.Exec("bank", `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier;
					GRANT CREATE ON DATABASE bank TO applier;
					GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier;
					ALTER TABLE acct OWNER TO applier; ALTER TABLE hist OWNER TO applier;`)
				target = fmt.Sprintf("postgres://applier:applier-pw@127.0.0.1:%d/bank?sslmode=disable", dst.Port)
			}
			w := startWorkload(t, src, "bank", 2)
			daemon := startSync(t, nil, "sync", "--source", src.URL("postgres", "", "bank"), "--target", target,
				"--table-check-interval", "500ms", "--max-retry-delay", "500ms")
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("sync log:\n%s", syncLog(daemon))
				}
			})
			time.Sleep(time.Second)
			src.Exec("bank", newSQL)
			stopNew := newTableWriter(t, src, "bank")
			// A change of shape between the table's creation and its copy:
			// the stream may carry a Relation message older than the copy.
			src.Exec("bank", `ALTER TABLE events ADD COLUMN extra int DEFAULT 5`)
			eventually(t, 60*time.Second, "the new tables to join", func() bool {
				return strings.Count(syncLog(daemon), "table joined the migration") >= 3
			})
			time.Sleep(2 * time.Second) // streaming the new tables' changes
			writes, txns := stopNew(), w.stop()
			tables := []string{"acct", "hist", "events", "readings", "audit.log"}
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				same := true
				for _, tbl := range tables {
					same = same && tableContents(t, src, "bank", tbl) == tableContents(t, dst, "bank", tbl)
				}
				if same {
					break
				}
				if time.Now().After(deadline) {
					for _, tbl := range tables {
						logRowDiff(t, src, dst, "bank", tbl)
					}
					t.Fatal("the target did not converge in 60s")
				}
			}
			daemon.Process.Signal(syscall.SIGTERM)
			if err := daemon.Wait(); err != nil {
				t.Fatalf("sync: %v\n%s", err, syncLog(daemon))
			}
			assertSameTables(t, src, dst, "bank", tables...)
			if got := dst.QueryString("bank", `SELECT string_agg(schema_name || '.' || table_name || ':' || state, ',' ORDER BY 1) FROM seren_replicator.tables WHERE state <> 'streaming'`); got != "audit.log:copied,public.events:copied,public.readings:copied" {
				t.Errorf("table states = %q", got)
			}
			if got := src.QueryString("bank", `SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '%\_add'`); got != "0" {
				t.Errorf("%s temporary slots left on the source", got)
			}
			t.Logf("%d transactions on the old tables, %d on the new ones", txns, writes)
		})
	}
}

// A table sync cannot stream (no key) stops sync with what to do; once
// fixed on the source it joins. An add that died mid-copy (its state left
// at copying, rows half there) is copied again from scratch. With
// --schema-changes=stop a new table stops sync instead.
func TestSyncNewTablesRefusalsAndRestarts(t *testing.T) {
	src, dst := pgtestPair(t)
	newTablesFor(t, src)
	prepareStreaming(t, src, dst, "shop", `CREATE TABLE items (id int PRIMARY KEY, v text);`, "public.items")
	src.Exec("shop", `INSERT INTO items SELECT g, 'v' FROM generate_series(1, 100) g`)
	catchUp(t, src, dst, "shop")

	t.Run("no key stops with the fix", func(t *testing.T) {
		src.Exec("shop", `CREATE TABLE imports (a int, b text); INSERT INTO imports VALUES (1, 'x')`)
		res := runCLI(t, nil, syncArgs(src, dst, "shop", "--catch-up")...)
		if res.Code != 4 || !strings.Contains(res.Stderr, "public.imports has no primary key") || !strings.Contains(res.Stderr, "--exclude-tables") {
			t.Fatalf("exit %d, want 4 naming the table and the fix\n%s", res.Code, res.Stderr)
		}
		// Nothing was published: the source still takes UPDATE and DELETE.
		src.Exec("shop", `UPDATE imports SET b = 'y'; DELETE FROM imports WHERE a = 2`)
		src.Exec("shop", `ALTER TABLE imports ADD PRIMARY KEY (a)`)
		catchUp(t, src, dst, "shop")
		src.Exec("shop", `INSERT INTO imports VALUES (2, 'z'); UPDATE imports SET b = 'w' WHERE a = 1`)
		catchUp(t, src, dst, "shop")
		assertSameTables(t, src, dst, "shop", "items", "imports")
	})

	t.Run("an unfinished add is copied again", func(t *testing.T) {
		src.Exec("shop", `CREATE TABLE orders (id int PRIMARY KEY, total int); INSERT INTO orders SELECT g, g FROM generate_series(1, 500) g`)
		// What a crash mid-copy leaves: the state, the table, part of the rows, and junk.
		dst.Exec("shop", `CREATE TABLE orders (id int PRIMARY KEY, total int); INSERT INTO orders SELECT g, -1 FROM generate_series(1, 700) g;
			INSERT INTO seren_replicator.tables (slot_name, schema_name, table_name, state) VALUES ('seren_shop', 'public', 'orders', 'copying')`)
		src.Exec("shop", `UPDATE orders SET total = total * 2 WHERE id <= 10`)
		catchUp(t, src, dst, "shop")
		assertSameTables(t, src, dst, "shop", "orders")
	})

	t.Run("a target table with rows nobody copied is refused", func(t *testing.T) {
		src.Exec("shop", `CREATE TABLE notes (id int PRIMARY KEY)`)
		dst.Exec("shop", `CREATE TABLE notes (id int PRIMARY KEY); INSERT INTO notes VALUES (42)`)
		res := runCLI(t, nil, syncArgs(src, dst, "shop", "--catch-up")...)
		if res.Code != 4 || !strings.Contains(res.Stderr, "public.notes already exists on the target and holds rows") {
			t.Fatalf("exit %d, want 4 refusing to overwrite notes\n%s", res.Code, res.Stderr)
		}
		if got := dst.QueryString("shop", `SELECT string_agg(id::text, ',') FROM notes`); got != "42" {
			t.Errorf("target notes = %q, want its row left alone", got)
		}
		dst.Exec("shop", `DELETE FROM notes`)
	})

	t.Run("dropped, then created again", func(t *testing.T) {
		src.Exec("shop", `DROP TABLE orders`)
		res := catchUp(t, src, dst, "shop")
		if !strings.Contains(res.Stderr, "table dropped on the source") {
			t.Errorf("no word of the dropped table:\n%s", res.Stderr)
		}
		if got := dst.QueryString("shop", `SELECT count(*) FROM orders`); got != "500" {
			t.Errorf("target orders holds %s rows, want its 500 kept", got)
		}
		src.Exec("shop", `CREATE TABLE orders (id int PRIMARY KEY, total int, note text); INSERT INTO orders VALUES (1, 1, 'new')`)
		res = catchUp(t, src, dst, "shop")
		if !strings.Contains(res.Stderr, "replacing the target's copy of the table") {
			t.Errorf("no word of the old copy replaced:\n%s", res.Stderr)
		}
		assertSameTables(t, src, dst, "shop", "orders")
	})

	t.Run("renamed", func(t *testing.T) {
		src.Exec("shop", `CREATE SCHEMA archive; ALTER TABLE imports RENAME TO imported; INSERT INTO imported VALUES (3, 'after');
			ALTER TABLE items SET SCHEMA archive; UPDATE archive.items SET v = 'moved' WHERE id < 5`)
		res := runCLI(t, nil, syncArgs(src, dst, "shop", "--catch-up", "--schema-changes", "stop")...)
		if res.Code != 4 || !strings.Contains(res.Stderr, "renamed on the source") {
			t.Fatalf("--schema-changes=stop: exit %d, want 4 naming the rename\n%s", res.Code, res.Stderr)
		}
		// Doing what the message says, by hand, for one of them.
		dst.Exec("shop", `ALTER TABLE imports RENAME TO imported`)
		res = catchUp(t, src, dst, "shop")
		if strings.Count(res.Stderr, "renamed on the target too") != 2 {
			t.Errorf("want two renames followed:\n%s", res.Stderr)
		}
		assertSameTables(t, src, dst, "shop", "imported", "archive.items")
		if got := dst.QueryString("shop", `SELECT to_regclass('imports') IS NULL AND to_regclass('public.items') IS NULL`); got != "true" {
			t.Errorf("old names still on the target")
		}
	})

	t.Run("renamed while streaming", func(t *testing.T) {
		daemon := startSync(t, nil, syncArgs(src, dst, "shop", "--table-check-interval", "1h")...)
		src.Exec("shop", `INSERT INTO imported VALUES (4, 'before')`)
		eventually(t, 30*time.Second, "the row before the rename", func() bool {
			return dst.QueryString("shop", `SELECT count(*) FROM imported WHERE a = 4`) == "1"
		})
		src.Exec("shop", `ALTER TABLE imported RENAME TO imports; INSERT INTO imports VALUES (5, 'after')`)
		eventually(t, 30*time.Second, "the row after the rename", func() bool {
			return dst.QueryString("shop", `SELECT count(*) FROM pg_class WHERE relname = 'imports'`) == "1" &&
				dst.QueryString("shop", `SELECT count(*) FROM imports WHERE a = 5`) == "1"
		})
		daemon.Process.Signal(syscall.SIGTERM)
		if err := daemon.Wait(); err != nil {
			t.Fatalf("sync: %v\n%s", err, syncLog(daemon))
		}
		assertSameTables(t, src, dst, "shop", "imports")
	})

	t.Run("schema-changes stop", func(t *testing.T) {
		src.Exec("shop", `CREATE TABLE later (id int PRIMARY KEY)`)
		res := runCLI(t, nil, syncArgs(src, dst, "shop", "--catch-up", "--schema-changes", "stop")...)
		if res.Code != 4 || !strings.Contains(res.Stderr, "public.later") || !strings.Contains(res.Stderr, "--schema-changes=apply") {
			t.Fatalf("exit %d, want 4 naming the table\n%s", res.Code, res.Stderr)
		}
		st := runCLI(t, nil, "status", "--source", src.URL("postgres", "", "shop"), "--target", dst.URL("postgres", "", "shop"))
		if !strings.Contains(st.Stdout, "not ready for cutover: 1 selected table is not replicated yet") || !strings.Contains(st.Stdout, "public.later") ||
			!strings.Contains(st.Stdout, "table public.orders joined after init: copied at") || !strings.Contains(st.Stdout, ", streaming") {
			t.Errorf("status does not show the table states:\n%s", st.Stdout)
		}
		catchUp(t, src, dst, "shop")
		assertSameTables(t, src, dst, "shop", "archive.items", "imports", "orders", "notes", "later")
	})
}

// logRowDiff logs up to 10 rows that differ between the sides.
func logRowDiff(t *testing.T, src, dst *pgtest.Cluster, db, table string) {
	t.Helper()
	rows := func(c *pgtest.Cluster) map[string]bool {
		out := map[string]bool{}
		for _, r := range strings.Split(tableContents(t, c, db, table), "\n") {
			out[r] = true
		}
		return out
	}
	a, b := rows(src), rows(dst)
	n := 0
	for r := range a {
		if !b[r] && n < 10 {
			t.Logf("%s: only on the source: %s", table, r)
			n++
		}
	}
	for r := range b {
		if !a[r] && n < 20 {
			t.Logf("%s: only on the target: %s", table, r)
			n++
		}
	}
}
