package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// exitNeedsAction is the exit code of a stop that needs a person
// (cmd/postgres-seren-replicator/exit.go).
const exitNeedsAction = 4

// recopyAdvice is what validate, sync and status say when the source no
// longer holds the changes a migration needs.
const recopyAdvice = "copy the data again with init --drop-existing"

// invalidateSlot makes the source invalidate slot: a tiny
// max_slot_wal_keep_size, then WAL written past it and checkpoints until
// pg_replication_slots says the slot is lost. The setting is reset after, so
// the slot the next init creates is not invalidated too.
func invalidateSlot(t *testing.T, src *pgtest.Cluster, db, slot string) {
	t.Helper()
	src.Exec("postgres", `ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`)
	src.Exec("postgres", `SELECT pg_reload_conf()`)
	defer func() {
		src.Exec("postgres", `ALTER SYSTEM RESET max_slot_wal_keep_size`)
		src.Exec("postgres", `SELECT pg_reload_conf()`)
	}()
	src.Exec("postgres", `CREATE TABLE IF NOT EXISTS wal_filler (v text)`)
	for i := 0; ; i++ {
		if got := src.QueryString(db, `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1`, slot); got == "lost" {
			return
		}
		if i == 10 {
			t.Fatalf("slot %s is not invalidated after %d rounds of WAL and checkpoints", slot, i)
		}
		src.Exec("postgres", `INSERT INTO wal_filler SELECT repeat(md5(g::text), 30) FROM generate_series(1, 20000) g;
			SELECT pg_switch_wal(); CHECKPOINT;`)
	}
}

// validate fails, naming the slot, when a migration exists (the target holds
// a checkpoint for the slot) but the source cannot resume it: the slot is
// missing, was invalidated, or confirmed past the checkpoint. Its advice,
// followed, brings the target back to equal. Before the break, validate
// passes on the same healthy migration.
func TestValidateFailsOnBrokenSlotOfMigration(t *testing.T) {
	src, dst := pgtestPair(t)
	cases := []struct {
		name      string
		why       string // in the check's detail
		breakSlot func(t *testing.T, db, slot string)
	}{
		{"missing", "does not exist on the source", func(t *testing.T, db, slot string) {
			src.Exec(db, `SELECT pg_drop_replication_slot($1)`, slot)
			src.Exec(db, `INSERT INTO t VALUES (1001, 'after the slot was dropped')`)
		}},
		{"ahead", "will not send the changes in between again", func(t *testing.T, db, slot string) {
			src.Exec(db, `INSERT INTO t VALUES (1001, 'skipped by the slot')`)
			src.Exec(db, `SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`, slot)
		}},
		{"lost", "invalidated", func(t *testing.T, db, slot string) {
			src.Exec(db, `INSERT INTO t VALUES (1001, 'in WAL the source removes')`)
			invalidateSlot(t, src, db, slot)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, slot := "slot_"+c.name, "seren_slot_"+c.name
			src.Exec("postgres", "CREATE DATABASE "+db)
			src.Exec(db, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g`)
			validate := func() Result {
				return runCLI(t, nil, "validate", "--source", src.DSN(db), "--target", dst.DSN(db))
			}
			if res := runCLI(t, nil, initArgs(src, dst, db, db)...); res.Code != 0 {
				t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
			}
			src.Exec(db, `INSERT INTO t VALUES (1000, 'after init')`)
			if res := validate(); res.Code != 0 || !strings.Contains(res.Stdout, "slot "+slot+" exists") {
				t.Fatalf("validate on a healthy migration: exit %d, want 0 with the slot passing\n%s%s", res.Code, res.Stdout, res.Stderr)
			}

			c.breakSlot(t, db, slot)
			res := validate()
			for _, want := range []string{"FAIL", "replication slot (" + db + ")", slot, c.why, recopyAdvice, "0 warnings, 1 failed"} {
				if !strings.Contains(res.Stdout, want) {
					t.Errorf("validate output lacks %q", want)
				}
			}
			if res.Code != 1 || t.Failed() {
				t.Fatalf("validate after the slot broke: exit %d, want 1 with one failed check naming %s\n%s%s", res.Code, slot, res.Stdout, res.Stderr)
			}
			if res := runCLI(t, nil, syncArgs(src, dst, db)...); res.Code != exitNeedsAction || !strings.Contains(res.Stderr, recopyAdvice) {
				t.Errorf("sync on the broken slot: exit %d, want %d with the same advice\n%s", res.Code, exitNeedsAction, res.Stderr)
			}

			// Follow the advice.
			if res := runCLI(t, nil, initArgs(src, dst, db, db, "--drop-existing")...); res.Code != 0 {
				t.Fatalf("following the advice, init --drop-existing: exit %d\n%s", res.Code, res.Stderr)
			}
			src.Exec(db, `INSERT INTO t VALUES (1002, 'after the new init'); UPDATE t SET v = 'w' WHERE id <= 10`)
			catchUp(t, src, dst, db)
			assertSameTables(t, src, dst, db, "t")
			if got := dst.QueryString(db, `SELECT count(*) FROM t WHERE id IN (1000, 1001, 1002)`); got != "3" {
				t.Errorf("target has %s of the rows written around the break, want 3", got)
			}
			if res := validate(); res.Code != 0 {
				t.Errorf("validate after following the advice: exit %d\n%s", res.Code, res.Stdout)
			}
		})
	}
}

// A table created on the source after init is selected but was never
// copied: with --schema-changes=stop, sync stops with the exit code that
// tells systemd not to restart it, for good in daemon mode too, and the ways
// out in its message work. (By default the table joins the migration:
// new_tables_test.go.)
func TestSyncNewSourceTableNeedsAction(t *testing.T) {
	src, dst := pgtestPair(t)
	src.Exec("postgres", "CREATE DATABASE grow")
	src.Exec("grow", `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 50) g`)
	if res := runCLI(t, nil, initArgs(src, dst, "grow", "grow")...); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("grow", `CREATE TABLE u (id int PRIMARY KEY, v text); INSERT INTO u SELECT g, 'u' FROM generate_series(1, 20) g;
		INSERT INTO t VALUES (51, 'after u')`)
	// The daemon, not --catch-up: it must stop, not retry.
	res := runCLIContext(t, context.Background(), time.Minute, nil, syncArgs(src, dst, "grow", "--schema-changes", "stop")...)
	if res.Code != exitNeedsAction || !strings.Contains(res.Stderr, "grow.public.u is selected but not replicated yet") {
		t.Fatalf("sync after a table was added on the source: exit %d, want %d naming the table\n%s", res.Code, exitNeedsAction, res.Stderr)
	}
	// Way out 1: leave the new table out.
	catchUp(t, src, dst, "grow", "--exclude-tables", "grow.public.u")
	assertSameTables(t, src, dst, "grow", "t")
	// Way out 2: let it join the migration.
	src.Exec("grow", `INSERT INTO u VALUES (21, 'while excluded')`)
	catchUp(t, src, dst, "grow")
	assertSameTables(t, src, dst, "grow", "t", "u")
	// Way out 3: copy everything again, the new table with it.
	if res := runCLI(t, nil, initArgs(src, dst, "grow", "grow", "--drop-existing")...); res.Code != 0 {
		t.Fatalf("init --drop-existing: exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("grow", `INSERT INTO u VALUES (22, 'after the new init'); INSERT INTO t VALUES (52, 'after the new init')`)
	catchUp(t, src, dst, "grow")
	assertSameTables(t, src, dst, "grow", "t", "u")
}

// A prepared transaction pending on the source holds up init (creating its
// slot waits for it): validate warns, naming it and the statement that ends
// it, and once that ran, init goes through.
func TestValidateWarnsOfPendingPreparedTransaction(t *testing.T) {
	src := pgtest.Start(t, pgtest.Options{Settings: []string{"max_prepared_transactions = 5"}})
	dst := pgtest.Start(t, pgtest.Options{})
	src.Exec("postgres", "CREATE DATABASE prep")
	src.Exec("prep", `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'committed')`)
	src.Exec("prep", `BEGIN; INSERT INTO t VALUES (2, 'prepared'); PREPARE TRANSACTION 'forgotten'`)
	res := runCLI(t, nil, "validate", "--source", src.DSN("prep"), "--target", dst.DSN("prep"))
	for _, want := range []string{"prepared transactions", "'forgotten' (database prep", "ROLLBACK PREPARED 'forgotten'"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("validate output lacks %q", want)
		}
	}
	if res.Code != 0 || t.Failed() {
		t.Fatalf("validate with a prepared transaction pending: exit %d, want 0 with a warning\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	blocked := runCLIContext(t, context.Background(), 8*time.Second, nil, initArgs(src, dst, "prep", "prep")...)
	if blocked.Code == 0 {
		t.Fatalf("init finished while a prepared transaction was pending; the warning is wrong:\n%s", blocked.Stdout)
	}
	src.Exec("prep", `ROLLBACK PREPARED 'forgotten'`)
	if res := runCLI(t, nil, initArgs(src, dst, "prep", "prep")...); res.Code != 0 {
		t.Fatalf("init after the prepared transaction ended: exit %d\n%s", res.Code, res.Stderr)
	}
	assertSameTables(t, src, dst, "prep", "t")
	if res := runCLI(t, nil, "validate", "--source", src.DSN("prep"), "--target", dst.DSN("prep")); !strings.Contains(res.Stdout, "no prepared transaction pending") {
		t.Errorf("validate after the prepared transaction ended:\n%s", res.Stdout)
	}
}
