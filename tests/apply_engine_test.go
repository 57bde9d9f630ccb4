package tests

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// applyModes runs a streaming test once per apply mode: replica mode with a
// superuser target, ordered mode with a target role that owns nothing but
// may write the tables (it may not set session_replication_role).
func applyModes(t *testing.T, run func(t *testing.T, src, dst *pgtest.Cluster, target func(db string) string)) {
	t.Run("replica", func(t *testing.T) {
		t.Parallel()
		src, dst := pgtestPair(t)
		run(t, src, dst, func(db string) string { return dst.URL("postgres", "", db) })
	})
	t.Run("ordered", func(t *testing.T) {
		t.Parallel()
		src, dst := pgtestPair(t)
		dst.CreateRole("applier", "applier-pw")
		run(t, src, dst, func(db string) string {
			dst.Exec(db, `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier;
				GRANT ALL ON ALL TABLES IN SCHEMA public, seren_replicator TO applier;`)
			return dst.URL("applier", "applier-pw", db)
		})
	})
}

func checkpointOf(dst *pgtest.Cluster, db string) string {
	return dst.QueryString(db, "SELECT end_lsn::text FROM seren_replicator.checkpoint WHERE slot_name = 'seren_"+db+"'")
}

// An UPDATE that finds no row on the target stops sync, and the batch that
// held it is not committed: the checkpoint stays before it, so every later
// start stops at the same place instead of going on without the row. The
// daemon has applied inserts and updates before, so its statements are
// prepared and the whole batch goes to the target in one round trip.
func TestSyncDivergenceLeavesCheckpoint(t *testing.T) {
	applyModes(t, func(t *testing.T, src, dst *pgtest.Cluster, target func(string) string) {
		prepareStreaming(t, src, dst, "dv", `CREATE TABLE kv (id int PRIMARY KEY, v text);`, "public.kv")
		args := []string{"sync", "--source", src.URL("postgres", "", "dv"), "--target", target("dv")}
		daemon := startSync(t, nil, args...)
		src.Exec("dv", `INSERT INTO kv SELECT g, 'v' FROM generate_series(1, 3) g`)
		src.Exec("dv", `UPDATE kv SET v = 'w' WHERE id = 1`)
		src.Exec("dv", `INSERT INTO kv VALUES (5, 'v')`)
		eventually(t, 30*time.Second, "the first changes to arrive", func() bool {
			return dst.QueryString("dv", "SELECT count(*) FROM kv WHERE v = 'w' OR id = 5") == "2"
		})
		dst.Exec("dv", `DELETE FROM kv WHERE id = 2`) // the target diverges
		before := checkpointOf(dst, "dv")
		src.Exec("dv", `BEGIN; INSERT INTO kv VALUES (4, 'new'); UPDATE kv SET v = 'changed' WHERE id = 2; COMMIT`)
		err := daemon.Wait()
		if code := daemon.ProcessState.ExitCode(); code != exitNeedsAction || !strings.Contains(syncLog(daemon), "diverged") {
			t.Fatalf("sync over a diverged row: %v (exit %d), want exit %d naming the divergence:\n%s", err, code, exitNeedsAction, syncLog(daemon))
		}
		for attempt := 1; attempt <= 2; attempt++ {
			if got := checkpointOf(dst, "dv"); got != before {
				t.Fatalf("the checkpoint moved from %s to %s past a batch that was not applied", before, got)
			}
			if got := dst.QueryString("dv", "SELECT count(*) FROM kv WHERE id = 4"); got != "0" {
				t.Fatalf("part of the failed batch was committed")
			}
			res := runCLI(t, nil, append(args, "--catch-up")...)
			if res.Code != exitNeedsAction || !strings.Contains(res.Stderr, "diverged") {
				t.Fatalf("catch-up %d over the diverged row: exit %d, want %d naming the divergence: %s", attempt, res.Code, exitNeedsAction, res.Stderr)
			}
		}
	})
}

// Two sync processes on one migration: the first one's batch waits on a
// target lock while its walsender is terminated, so the slot is free and a
// second process could stream the same transactions from the same
// checkpoint. The second must refuse (the first's target session still
// holds the migration's writer lock), and the transactions end applied once.
// The checkpoint statements guard the same rule in SQL (checkpoint tests).
func TestSyncSecondWriterCannotApplyTwice(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "two", `CREATE TABLE events (n int, note text); ALTER TABLE events REPLICA IDENTITY FULL;`, "public.events")
	first := startSync(t, nil, syncArgs(src, dst, "two", "--max-retry-delay", "30s")...)
	eventually(t, 30*time.Second, "first sync to stream", func() bool {
		return src.QueryString("two", "SELECT count(*) FROM pg_replication_slots WHERE active") == "1"
	})
	lock := dst.Connect("two")
	ctx := context.Background()
	tx, err := lock.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE events IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	src.Exec("two", `INSERT INTO events SELECT g, 'once' FROM generate_series(1, 7) g`)
	eventually(t, 30*time.Second, "first sync's batch to wait on the lock", func() bool {
		return dst.QueryString("two", "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name LIKE 'postgres-seren%'") == "1"
	})
	src.Exec("two", "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'seren_two'")
	eventually(t, 30*time.Second, "slot to be released", func() bool {
		return src.QueryString("two", "SELECT count(*) FROM pg_replication_slots WHERE active") == "0"
	})
	res := runCLI(t, nil, syncArgs(src, dst, "two", "--catch-up")...)
	if res.Code != 3 || !strings.Contains(res.Stderr, "another process is applying this migration") {
		t.Fatalf("second sync while the first's batch is in flight: exit %d, want 3\n%s", res.Code, res.Stderr)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the rows to arrive", func() bool {
		return dst.QueryString("two", "SELECT count(*) FROM events") != "0"
	})
	first.Process.Signal(syscall.SIGTERM)
	first.Wait()
	if got := dst.QueryString("two", "SELECT count(*) FROM events"); got != "7" {
		t.Fatalf("target has %s rows, want 7\nfirst:\n%s", got, syncLog(first))
	}
	catchUp(t, src, dst, "two")
	assertSameTables(t, src, dst, "two", "events")
}

// --catch-up drains to the position of every transaction committed before
// it started, including asynchronously committed ones whose WAL was not yet
// written when it read the source's position.
func TestSyncCatchUpIncludesAsyncCommits(t *testing.T) {
	src := pgtest.Start(t, pgtest.Options{Settings: []string{"synchronous_commit = off", "wal_writer_delay = '2s'", "wal_writer_flush_after = 0"}})
	dst := pgtest.Start(t, pgtest.Options{})
	prepareStreaming(t, src, dst, "ac", `CREATE TABLE t (id int PRIMARY KEY, v text);`, "public.t")
	conn := src.Connect("ac")
	ctx := context.Background()
	for round := range 3 {
		// Several commits in quick succession: the WAL writer flushes the
		// first at once and the rest only after wal_writer_delay.
		for i := range 20 {
			if _, err := conn.Exec(ctx, `INSERT INTO t VALUES ($1, 'v')`, round*100+i); err != nil {
				t.Fatal(err)
			}
		}
		catchUp(t, src, dst, "ac")
		if got, want := dst.QueryString("ac", "SELECT count(*) FROM t"), src.QueryString("ac", "SELECT count(*) FROM t"); got != want {
			t.Fatalf("round %d: catch-up applied %s of %s rows committed before it started", round, got, want)
		}
	}
}

// While a sync runs, a second sync on the same migration, and an init that
// would drop the target, refuse at once and name the running one; nothing
// is changed and the first goes on.
func TestSecondWriterRefusedUpFront(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "one", `CREATE TABLE t (id int PRIMARY KEY, v text);`, "public.t")
	first := startSync(t, nil, syncArgs(src, dst, "one")...)
	src.Exec("one", `INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g`)
	eventually(t, 30*time.Second, "the first sync to apply", func() bool {
		return dst.QueryString("one", "SELECT count(*) FROM t") == "100"
	})
	start := time.Now()
	res := runCLI(t, nil, syncArgs(src, dst, "one", "--catch-up")...)
	if res.Code != 3 || !strings.Contains(res.Stderr, "another process is applying this migration") || !strings.Contains(res.Stderr, "application postgres-seren-replicator") {
		t.Fatalf("second sync: exit %d, want 3 naming the running one\n%s", res.Code, res.Stderr)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the second sync took %s to refuse", took)
	}
	res = runCLI(t, nil, "init", "--yes", "--drop-existing", "--source", src.DSN("one"), "--target", dst.DSN("one"))
	if res.Code == 0 || !strings.Contains(res.Stderr, "stop it before running init") {
		t.Fatalf("init --drop-existing during sync: exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("one", `INSERT INTO t VALUES (101, 'after')`)
	eventually(t, 30*time.Second, "the first sync to go on", func() bool {
		return dst.QueryString("one", "SELECT count(*) FROM t") == "101"
	})
	first.Process.Signal(syscall.SIGTERM)
	if err := first.Wait(); err != nil {
		t.Fatalf("first sync: %v\n%s", err, syncLog(first))
	}
	catchUp(t, src, dst, "one")
	assertSameTables(t, src, dst, "one", "t")
}

// After the slot is lost, the advice sync and status give works when
// followed: init again with --drop-existing, then sync.
func TestAdviceAfterLostSlotWorks(t *testing.T) {
	src, dst := pgtestPair(t)
	src.Exec("postgres", "CREATE DATABASE lost")
	src.Exec("lost", `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 50) g`)
	if res := runCLI(t, nil, initArgs(src, dst, "lost", "lost")...); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("lost", `SELECT pg_drop_replication_slot('seren_lost')`)
	src.Exec("lost", `INSERT INTO t VALUES (51, 'after the slot was lost')`)
	res := runCLI(t, nil, "sync", "--catch-up", "--source", src.DSN("lost"), "--target", dst.DSN("lost"))
	const advice = "copy the data again with init --drop-existing"
	if res.Code == 0 || !strings.Contains(res.Stderr, advice) {
		t.Fatalf("sync without its slot: exit %d, want the advice %q\n%s", res.Code, advice, res.Stderr)
	}
	st := runCLI(t, nil, "status", "--source", src.DSN("lost"), "--target", dst.DSN("lost"))
	if !strings.Contains(st.Stdout, advice) {
		t.Errorf("status does not give the advice:\n%s", st.Stdout)
	}
	if res := runCLI(t, nil, initArgs(src, dst, "lost", "lost", "--drop-existing")...); res.Code != 0 {
		t.Fatalf("following the advice, init --drop-existing: exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("lost", `INSERT INTO t VALUES (52, 'after init')`)
	catchUp(t, src, dst, "lost")
	assertSameTables(t, src, dst, "lost", "t")
}
