package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/serenorg/postgres-seren-replicator/stream"
	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// protocolSourceSettings make the source decode the way the workloads below
// need: prepared transactions allowed, and any transaction over 64 kB of
// changes spilled to disk by the walsender's reorder buffer.
var protocolSourceSettings = []string{"max_prepared_transactions = 20", "logical_decoding_work_mem = '64kB'"}

// protocolWorkload is a source workload in three parts: before sync starts,
// while the daemon runs, and after it stopped, before sync --catch-up.
type protocolWorkload struct {
	name   string
	schema string   // run on both sides; rows it inserts are on both
	tables []string // compared row for row at the end
	before func(t *testing.T, src *pgtest.Cluster, db string)
	during func(t *testing.T, src *pgtest.Cluster, db string)
	after  func(t *testing.T, src *pgtest.Cluster, db string)
	check  func(t *testing.T, src *pgtest.Cluster, db string) // optional: the workload did what it means to
}

// Source workloads at the edges of logical decoding, each run in both apply
// modes (replica mode with a superuser target, ordered mode with a role
// that owns the target tables and nothing else). Each ends with the tables
// compared row for row by an md5 of their rows in a canonical order: once
// while the daemon runs (it applied the transactions it was sent), once
// after the catch-up run that follows a restart.
func TestSyncProtocolWorkloads(t *testing.T) {
	workloads := []func() protocolWorkload{twoPhaseWorkload, subtransactionWorkload, interleavedWorkload, logicalMessageWorkload, spilledWorkload}
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var src, dst *pgtest.Cluster
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				src = pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_SOURCE_BINDIR"), Settings: protocolSourceSettings})
			}()
			go func() { defer wg.Done(); dst = pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_TARGET_BINDIR")}) }()
			wg.Wait()
			if src == nil || dst == nil {
				t.FailNow()
			}
			target := func(db string) string { return dst.URL("postgres", "", db) }
			if mode == "ordered" {
				dst.CreateRole("applier", "applier-pw")
				target = func(db string) string {
					dst.Exec(db, `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier;
						GRANT ALL ON ALL TABLES IN SCHEMA public, seren_replicator TO applier;
						GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO applier;
						DO $$ DECLARE r record; BEGIN
							FOR r IN SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' LOOP
								EXECUTE format('ALTER TABLE public.%I OWNER TO applier', r.relname);
							END LOOP; END $$;`)
					return dst.URL("applier", "applier-pw", db)
				}
			}
			// One after the other on the same clusters (which report to this
			// test, so no subtests): each in a database named after it.
			for _, mk := range workloads {
				w := mk()
				t.Logf("workload %s", w.name)
				runProtocolWorkload(t, src, dst, w, target)
			}
		})
	}
}

func runProtocolWorkload(t *testing.T, src, dst *pgtest.Cluster, w protocolWorkload, target func(db string) string) {
	db := w.name
	qualified := make([]string, len(w.tables))
	for i, tbl := range w.tables {
		qualified[i] = "public." + tbl
	}
	prepareStreaming(t, src, dst, db, w.schema, qualified...)
	args := []string{"sync", "--source", src.URL("postgres", "", db), "--target", target(db)}
	if w.before != nil {
		w.before(t, src, db)
	}
	daemon := startSync(t, nil, args...)
	w.during(t, src, db)
	waitSameRows(t, src, dst, db, w.tables, daemon)
	if err := daemon.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := daemon.Wait(); err != nil {
		t.Fatalf("sync after SIGTERM: %v\n%s", err, syncLog(daemon))
	}
	if w.after != nil {
		w.after(t, src, db)
	}
	runCatchUp := runCLI(t, nil, append(args, "--catch-up")...)
	if runCatchUp.Code != 0 {
		t.Fatalf("sync --catch-up: exit %d\n%s", runCatchUp.Code, runCatchUp.Stderr)
	}
	assertSameRowsMD5(t, src, dst, db, w.tables)
	if w.check != nil {
		w.check(t, src, db)
	}
}

// rowsMD5 is the row count and the md5 of a table's rows, each rendered as
// text, in the order of that text: equal on both sides exactly when the
// rows are (independent of verify).
func rowsMD5(c *pgtest.Cluster, db, table string) string {
	return c.QueryString(db, fmt.Sprintf(`SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM ONLY %s t`, table))
}

func assertSameRowsMD5(t *testing.T, src, dst *pgtest.Cluster, db string, tables []string) {
	t.Helper()
	for _, tbl := range tables {
		if got, want := rowsMD5(dst, db, tbl), rowsMD5(src, db, tbl); got != want {
			t.Errorf("table %s: target %s, source %s", tbl, got, want)
			assertSameTables(t, src, dst, db, tbl)
		}
	}
}

// waitSameRows waits until the running daemon has made every table equal
// to the source, and fails with the differences and its log otherwise.
func waitSameRows(t *testing.T, src, dst *pgtest.Cluster, db string, tables []string, daemon *exec.Cmd) {
	t.Helper()
	same := func() bool {
		for _, tbl := range tables {
			if rowsMD5(dst, db, tbl) != rowsMD5(src, db, tbl) {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(90 * time.Second)
	for !same() {
		if time.Now().After(deadline) {
			assertSameRowsMD5(t, src, dst, db, tables)
			t.Fatalf("the running sync did not make the target equal within 90 s; its log:\n%s", syncLog(daemon))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// session is one source connection that keeps a transaction open across
// calls, for workloads that interleave transactions.
type session struct {
	t    *testing.T
	conn *pgx.Conn
}

func openSession(t *testing.T, src *pgtest.Cluster, db string) *session {
	return &session{t: t, conn: src.Connect(db)}
}

// exec runs SQL (several statements allowed) on the session.
func (s *session) exec(sql string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.conn.PgConn().Exec(ctx, sql).Close(); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
}

// Two-phase commit: transactions prepared before sync starts and resolved
// while it runs, prepared and resolved out of order, rolled back, with a
// savepoint rolled back inside, and one prepared while the daemon runs and
// committed after it stopped. Without two_phase the source decodes a
// prepared transaction at COMMIT PREPARED, and nothing at ROLLBACK PREPARED.
func twoPhaseWorkload() protocolWorkload {
	return protocolWorkload{
		name: "twophase",
		schema: `CREATE TABLE acct (id int PRIMARY KEY, bal int NOT NULL);
			CREATE TABLE transfer (id int PRIMARY KEY, src int NOT NULL REFERENCES acct, dst int NOT NULL REFERENCES acct, amount int NOT NULL);
			INSERT INTO acct SELECT g, 1000 FROM generate_series(1, 60) g;`,
		tables: []string{"acct", "transfer"},
		before: func(t *testing.T, src *pgtest.Cluster, db string) {
			src.Exec(db, `BEGIN; INSERT INTO acct VALUES (100, 5); INSERT INTO transfer VALUES (1, 1, 100, 5);
				UPDATE acct SET bal = bal - 5 WHERE id = 1; PREPARE TRANSACTION 'tp_before_commit'`)
			src.Exec(db, `BEGIN; INSERT INTO acct VALUES (101, 7); UPDATE acct SET bal = 0 WHERE id = 2; PREPARE TRANSACTION 'tp_before_rollback'`)
			src.Exec(db, `UPDATE acct SET bal = bal + 1 WHERE id = 3`)
		},
		during: func(t *testing.T, src *pgtest.Cluster, db string) {
			for i := 0; i < 12; i++ {
				a, b := 10+i%20, 30+i%20
				src.Exec(db, fmt.Sprintf(`BEGIN; UPDATE acct SET bal = bal - %[3]d WHERE id = %[1]d; UPDATE acct SET bal = bal + %[3]d WHERE id = %[2]d;
					INSERT INTO transfer VALUES (%[4]d, %[1]d, %[2]d, %[3]d);
					SAVEPOINT s; UPDATE acct SET bal = -1 WHERE id = %[1]d; INSERT INTO transfer VALUES (%[4]d + 1000, %[1]d, %[2]d, 0); ROLLBACK TO s;
					PREPARE TRANSACTION 'tp_%[4]d'`, a, b, i+1, 10+i))
				src.Exec(db, fmt.Sprintf(`UPDATE acct SET bal = bal + 1 WHERE id = %d`, 50+i%10)) // a plain commit between
				if i%3 == 2 {
					src.Exec(db, fmt.Sprintf(`ROLLBACK PREPARED 'tp_%d'`, 10+i))
				} else {
					src.Exec(db, fmt.Sprintf(`COMMIT PREPARED 'tp_%d'`, 10+i))
				}
			}
			// Prepared in one order, committed in the other.
			src.Exec(db, `BEGIN; UPDATE acct SET bal = bal + 100 WHERE id = 4; INSERT INTO transfer VALUES (40, 4, 5, 100); PREPARE TRANSACTION 'tp_first'`)
			src.Exec(db, `BEGIN; UPDATE acct SET bal = bal + 200 WHERE id = 5; DELETE FROM transfer WHERE id = 10; PREPARE TRANSACTION 'tp_second'`)
			src.Exec(db, `COMMIT PREPARED 'tp_second'`)
			src.Exec(db, `COMMIT PREPARED 'tp_first'`)
			src.Exec(db, `COMMIT PREPARED 'tp_before_commit'`)
			src.Exec(db, `ROLLBACK PREPARED 'tp_before_rollback'`)
			src.Exec(db, `BEGIN; UPDATE acct SET bal = 42 WHERE id = 6; INSERT INTO acct VALUES (102, 1); INSERT INTO transfer VALUES (41, 6, 102, 1); PREPARE TRANSACTION 'tp_across'`)
			src.Exec(db, `UPDATE acct SET bal = bal + 1 WHERE id = 7`)
		},
		after: func(t *testing.T, src *pgtest.Cluster, db string) {
			src.Exec(db, `COMMIT PREPARED 'tp_across'`)
			src.Exec(db, `BEGIN; DELETE FROM transfer WHERE id = 41; PREPARE TRANSACTION 'tp_after'`)
			src.Exec(db, `ROLLBACK PREPARED 'tp_after'`)
		},
		check: func(t *testing.T, src *pgtest.Cluster, db string) {
			if got := src.QueryString(db, `SELECT count(*) FROM pg_prepared_xacts`); got != "0" {
				t.Errorf("%s prepared transactions left on the source", got)
			}
			if got := src.QueryString(db, `SELECT count(*) FROM transfer WHERE id IN (1, 41) OR amount = 0`); got != "2" {
				t.Errorf("source: %s of the committed prepared rows, want 2 (and none of the rolled-back savepoints)", got)
			}
		},
	}
}

// Subtransactions rolled back with ROLLBACK TO, nested savepoints, a key
// inserted in a rolled-back savepoint and again after it, exceptions caught
// in plpgsql blocks (each a subtransaction), more subtransactions than a
// backend caches (64), a whole transaction rolled back, and a rolled-back
// subtransaction large enough to spill.
func subtransactionWorkload() protocolWorkload {
	return protocolWorkload{
		name: "subxact",
		schema: `CREATE TABLE items (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
			CREATE TABLE audit (id int PRIMARY KEY, note text);
			INSERT INTO items SELECT g, 'seed', 0 FROM generate_series(1, 20) g;`,
		tables: []string{"items", "audit"},
		during: func(t *testing.T, src *pgtest.Cluster, db string) {
			src.Exec(db, `BEGIN;
				INSERT INTO items VALUES (100, 'a');
				SAVEPOINT s1;
					INSERT INTO items VALUES (101, 'rolled back');
					UPDATE items SET v = 'rolled back' WHERE id = 100;
					SAVEPOINT s2; DELETE FROM items WHERE id = 1; RELEASE s2;
				ROLLBACK TO s1;
				INSERT INTO items VALUES (101, 'again, kept');
				SAVEPOINT s3; UPDATE items SET n = n + 1 WHERE id <= 10; RELEASE s3;
				SAVEPOINT s4; SAVEPOINT s5; DELETE FROM items WHERE id = 2; ROLLBACK TO s5; DELETE FROM items WHERE id = 3; RELEASE s4;
				COMMIT`)
			src.Exec(db, `DO $$ BEGIN
				FOR i IN 200..400 LOOP
					BEGIN
						INSERT INTO items VALUES (i, 'plpgsql', i);
						UPDATE items SET n = n + 1 WHERE id = 4;
						IF i % 3 = 0 THEN RAISE EXCEPTION 'undo %', i; END IF;
					EXCEPTION WHEN raise_exception THEN
						INSERT INTO audit VALUES (i, 'undone ' || i);
					END;
				END LOOP;
				BEGIN
					INSERT INTO items VALUES (5, 'duplicate');
				EXCEPTION WHEN unique_violation THEN
					UPDATE items SET v = 'duplicate caught' WHERE id = 5;
				END;
			END $$`)
			src.Exec(db, `BEGIN; INSERT INTO items VALUES (500, 'never'); UPDATE items SET v = 'never' WHERE id = 6; ROLLBACK`)
			src.Exec(db, `BEGIN;
				UPDATE items SET v = 'before the big savepoint' WHERE id = 7;
				SAVEPOINT big;
				INSERT INTO items SELECT g, repeat('x', 200), g FROM generate_series(1000, 5000) g;
				DELETE FROM items WHERE id BETWEEN 8 AND 12;
				ROLLBACK TO big;
				INSERT INTO items SELECT g, 'after the big savepoint', g FROM generate_series(1000, 1010) g;
				COMMIT`)
		},
		after: func(t *testing.T, src *pgtest.Cluster, db string) {
			src.Exec(db, `DO $$ BEGIN
				FOR i IN 600..700 LOOP
					BEGIN
						UPDATE items SET v = 'after ' || i WHERE id = i - 590;
						INSERT INTO audit VALUES (i, 'kept');
						IF i % 2 = 0 THEN PERFORM 1 / 0; END IF;
					EXCEPTION WHEN division_by_zero THEN NULL;
					END;
				END LOOP;
			END $$`)
		},
		check: func(t *testing.T, src *pgtest.Cluster, db string) {
			if got := src.QueryString(db, `SELECT count(*) FROM items WHERE v IN ('rolled back', 'never') OR id BETWEEN 1011 AND 5000`); got != "0" {
				t.Errorf("source has %s rows of rolled-back work: the workload is not what it means", got)
			}
		},
	}
}

// A long transaction open across many short commits, touching the keys
// those commits changed once they committed: its first change comes before
// their commits in the WAL, its commit after. One long transaction is open
// before sync starts, one across the daemon's stop (its first change is
// before the position the daemon checkpointed), one rolls back.
func interleavedWorkload() protocolWorkload {
	var long0, long2 *session
	return protocolWorkload{
		name: "interleaved",
		schema: `CREATE TABLE kv (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
			CREATE TABLE uniq (id int PRIMARY KEY, code text UNIQUE);
			INSERT INTO kv SELECT g, 'seed', 0 FROM generate_series(1, 100) g;
			INSERT INTO uniq SELECT g, 'c' || g FROM generate_series(1, 10) g;`,
		tables: []string{"kv", "uniq"},
		before: func(t *testing.T, src *pgtest.Cluster, db string) {
			long0 = openSession(t, src, db)
			long0.exec(`BEGIN; INSERT INTO kv VALUES (1001, 'long0'); UPDATE kv SET n = 1000 WHERE id = 99`)
		},
		during: func(t *testing.T, src *pgtest.Cluster, db string) {
			short := openSession(t, src, db)
			long1 := openSession(t, src, db)
			long3 := openSession(t, src, db)
			long1.exec(`BEGIN; UPDATE kv SET n = n + 1000 WHERE id BETWEEN 90 AND 98; INSERT INTO kv VALUES (1002, 'long1')`)
			long3.exec(`BEGIN; UPDATE kv SET v = 'never' WHERE id BETWEEN 71 AND 80; INSERT INTO kv VALUES (1003, 'never')`)
			for i := 1; i <= 60; i++ {
				short.exec(fmt.Sprintf(`UPDATE kv SET v = 'short %[1]d', n = n + 1 WHERE id = %[2]d; INSERT INTO kv VALUES (%[3]d, 'short', %[1]d)`, i, i%50+1, 2000+i))
				if i%10 == 0 {
					short.exec(fmt.Sprintf(`DELETE FROM kv WHERE id = %d`, 2000+i-5))
				}
				if i%7 == 0 {
					// Swap two codes of a unique column, one short transaction.
					short.exec(`BEGIN; UPDATE uniq SET code = 'tmp' WHERE id = 1; UPDATE uniq SET code = 'c1' WHERE id = 2; UPDATE uniq SET code = 'c2' WHERE id = 1; COMMIT;
						BEGIN; UPDATE uniq SET code = 'tmp' WHERE id = 2; UPDATE uniq SET code = 'c1' WHERE id = 1; UPDATE uniq SET code = 'c2' WHERE id = 2; COMMIT`)
				}
				if i == 30 {
					long0.exec(`UPDATE kv SET v = 'long0 after shorts' WHERE id <= 20; DELETE FROM kv WHERE id = 2007; COMMIT`)
					long2 = openSession(t, src, db)
					long2.exec(`BEGIN; UPDATE kv SET n = -1 WHERE id BETWEEN 60 AND 70; INSERT INTO kv VALUES (1004, 'across the restart')`)
				}
			}
			long3.exec(`ROLLBACK`)
			long1.exec(`UPDATE kv SET v = v || ' +long1' WHERE id BETWEEN 1 AND 50; UPDATE kv SET id = 3000 WHERE id = 2010;
				UPDATE uniq SET code = 'long1' WHERE id = 3; COMMIT`)
			short.exec(`UPDATE kv SET v = 'short after long1' WHERE id BETWEEN 1 AND 5; INSERT INTO uniq VALUES (11, 'c3x')`)
		},
		after: func(t *testing.T, src *pgtest.Cluster, db string) {
			long2.exec(`UPDATE kv SET v = v || ' +long2' WHERE id <= 10; DELETE FROM kv WHERE id = 2020; COMMIT`)
		},
		check: func(t *testing.T, src *pgtest.Cluster, db string) {
			if got := src.QueryString(db, `SELECT count(*) FROM kv WHERE id IN (1001, 1002, 1004, 3000) OR v LIKE '%+long2'`); got != "14" {
				t.Errorf("source: %s rows written by the long transactions, want 14", got)
			}
		},
	}
}

// Transactional and non-transactional logical messages, alone, inside
// transactions with changes, in a transaction that rolls back (the
// non-transactional one is decoded anyway), with binary and large payloads.
// They are not data: the target must end as the source, nothing more.
func logicalMessageWorkload() protocolWorkload {
	return protocolWorkload{
		name:   "messages",
		schema: `CREATE TABLE m (id int PRIMARY KEY, v text);`,
		tables: []string{"m"},
		before: func(t *testing.T, src *pgtest.Cluster, db string) {
			src.Exec(db, `SELECT pg_logical_emit_message(false, 'seren-test', 'before sync')`)
			src.Exec(db, `INSERT INTO m VALUES (0, 'before sync')`)
		},
		during: func(t *testing.T, src *pgtest.Cluster, db string) {
			src.Exec(db, `SELECT pg_logical_emit_message(false, 'seren-test', 'non-transactional, alone')`)
			src.Exec(db, `SELECT pg_logical_emit_message(true, 'seren-test', 'transactional, alone')`)
			src.Exec(db, `BEGIN; INSERT INTO m VALUES (1, 'a');
				SELECT pg_logical_emit_message(true, 'seren-test', 'in a transaction');
				SELECT pg_logical_emit_message(false, 'seren-test', 'non-transactional in a transaction');
				UPDATE m SET v = 'b' WHERE id = 1; COMMIT`)
			src.Exec(db, `BEGIN; INSERT INTO m VALUES (2, 'rolled back');
				SELECT pg_logical_emit_message(false, 'seren-test', 'survives the rollback');
				SELECT pg_logical_emit_message(true, 'seren-test', 'rolled back'); ROLLBACK`)
			src.Exec(db, `BEGIN; SELECT pg_logical_emit_message(true, '', '\x00ff00'::bytea);
				SELECT pg_logical_emit_message(true, 'seren-test', repeat('large ', 300000)); INSERT INTO m VALUES (3, 'after a large message'); COMMIT`)
			for i := 10; i < 60; i++ {
				src.Exec(db, fmt.Sprintf(`SELECT pg_logical_emit_message(%[2]t, 'seren-test', 'step %[1]d'); INSERT INTO m VALUES (%[1]d, 'step'); SELECT pg_logical_emit_message(%[3]t, 'seren-test', 'step %[1]d done')`, i, i%2 == 0, i%3 == 0))
			}
		},
		after: func(t *testing.T, src *pgtest.Cluster, db string) {
			src.Exec(db, `SELECT pg_logical_emit_message(false, 'seren-test', 'after sync stopped'); UPDATE m SET v = 'after' WHERE id < 20;
				SELECT pg_logical_emit_message(true, 'seren-test', 'last')`)
		},
	}
}

// One transaction large enough that the source's reorder buffer spills it
// to disk (logical_decoding_work_mem = 64 kB): inserts with TOASTed values,
// updates that leave them unchanged, key changes, deletes and a rolled-back
// savepoint, while other transactions commit in between.
func spilledWorkload() protocolWorkload {
	return protocolWorkload{
		name: "spilled",
		schema: `CREATE TABLE big (id int PRIMARY KEY, v text, doc text, n int NOT NULL DEFAULT 0);
			ALTER TABLE big ALTER COLUMN doc SET STORAGE EXTERNAL;
			CREATE TABLE side (id int PRIMARY KEY, v text);
			INSERT INTO big SELECT g, 'seed', NULL, 0 FROM generate_series(1, 1000) g;`,
		tables: []string{"big", "side"},
		during: func(t *testing.T, src *pgtest.Cluster, db string) {
			bulk := openSession(t, src, db)
			other := openSession(t, src, db)
			bulk.exec(`BEGIN; INSERT INTO big SELECT g, 'bulk', CASE WHEN g % 500 = 0 THEN repeat(md5(g::text), 300) END, g FROM generate_series(10000, 20000) g`)
			other.exec(`INSERT INTO side VALUES (1, 'committed while the bulk transaction was open')`)
			bulk.exec(`UPDATE big SET n = n + 1 WHERE id BETWEEN 10000 AND 15000;
				UPDATE big SET id = id + 100000 WHERE id BETWEEN 19901 AND 20000;
				DELETE FROM big WHERE id BETWEEN 1 AND 300;
				SAVEPOINT s; UPDATE big SET v = 'rolled back' WHERE id BETWEEN 300 AND 1000; ROLLBACK TO s;
				UPDATE big SET v = 'updated' WHERE id BETWEEN 301 AND 400`)
			other.exec(`INSERT INTO side VALUES (2, 'also committed in between')`)
			bulk.exec(`COMMIT`)
		},
		after: func(t *testing.T, src *pgtest.Cluster, db string) {
			src.Exec(db, `BEGIN; UPDATE big SET v = 'second bulk' WHERE id BETWEEN 10000 AND 25000; INSERT INTO side SELECT g, 'x' FROM generate_series(3, 3000) g; COMMIT`)
		},
		check: func(t *testing.T, src *pgtest.Cluster, db string) {
			if got := src.QueryString(db, `SELECT spill_txns > 0 FROM pg_stat_replication_slots WHERE slot_name = 'seren_spilled'`); got != "true" {
				t.Errorf("the source spilled no transaction to disk (spill_txns > 0: %q): the workload does not test spilling", got)
			}
		},
	}
}

// sync does not ask for logical messages, but its decoder knows them: this
// reads them from a real source with the "messages" option and decodes every
// message with stream.Decode, so the decoder is held to the server's bytes
// (flags, prefix, binary and large contents, which transaction they belong
// to) and not only to hand-written ones.
func TestDecodeLogicalMessagesFromServer(t *testing.T) {
	src := pgtest.Start(t, pgtest.Options{BinDir: os.Getenv("PG_SOURCE_BINDIR")})
	src.Exec("postgres", `CREATE TABLE m (id int PRIMARY KEY); CREATE PUBLICATION msgpub FOR TABLE m`)
	start := src.QueryString("postgres", `SELECT lsn::text FROM pg_create_logical_replication_slot('msgslot', 'pgoutput')`)
	src.Exec("postgres", `SELECT pg_logical_emit_message(false, 'p', 'alone')`)
	src.Exec("postgres", `BEGIN; INSERT INTO m VALUES (1); SELECT pg_logical_emit_message(true, 'p', 'in a transaction');
		SELECT pg_logical_emit_message(false, 'p', 'non-transactional inside'); COMMIT`)
	src.Exec("postgres", `BEGIN; INSERT INTO m VALUES (2); SELECT pg_logical_emit_message(false, 'p', 'survives the rollback');
		SELECT pg_logical_emit_message(true, 'p', 'rolled back'); ROLLBACK`)
	src.Exec("postgres", `BEGIN; SELECT pg_logical_emit_message(true, '', '\x00ff00'::bytea);
		SELECT pg_logical_emit_message(true, 'p', ''); SELECT pg_logical_emit_message(true, 'p', repeat('x', 1000000)); COMMIT`)
	src.Exec("postgres", `SELECT pg_logical_emit_message(false, 'p', 'last')`)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgconn.Connect(ctx, src.DSN("postgres")+" replication=database")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	lsn, err := pglogrepl.ParseLSN(start)
	if err != nil {
		t.Fatal(err)
	}
	if err := pglogrepl.StartReplication(ctx, conn, "msgslot", lsn, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'msgpub'", "messages 'true'"},
	}); err != nil {
		t.Fatal(err)
	}
	// Each message rendered as "B", "C", "I" or "M<tx|non-tx> prefix content"
	// (content abbreviated to its length when long).
	var got []string
	for len(got) == 0 || got[len(got)-1] != "M non-tx p last" {
		raw, err := conn.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("receive: %v (decoded so far: %q)", err, got)
		}
		cd, ok := raw.(*pgproto3.CopyData)
		if !ok || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		msg, err := stream.Decode(xld.WALData)
		if err != nil {
			t.Fatalf("decode %q: %v", xld.WALData[:min(len(xld.WALData), 40)], err)
		}
		switch m := msg.(type) {
		case *stream.Begin:
			got = append(got, "B")
		case *stream.Commit:
			got = append(got, "C")
		case *stream.Insert:
			got = append(got, "I")
		case *stream.LogicalMessage:
			kind, content := "non-tx", fmt.Sprintf("%q", m.Content)
			if m.Transactional {
				kind = "tx"
			}
			if len(m.Content) > 100 {
				content = fmt.Sprintf("%d bytes", len(m.Content))
			}
			if m.LSN == 0 {
				t.Errorf("message %s has no LSN", content)
			}
			got = append(got, strings.TrimSpace(fmt.Sprintf("M %s %s %s", kind, m.Prefix, strings.Trim(content, `"`))))
		}
	}
	want := []string{
		"M non-tx p alone",
		"M non-tx p non-transactional inside",
		"B", "I", "M tx p in a transaction", "C",
		"M non-tx p survives the rollback",
		"B", `M tx  \x00\xff\x00`, "M tx p", "M tx p 1000000 bytes", "C",
		"M non-tx p last",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("decoded messages:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
