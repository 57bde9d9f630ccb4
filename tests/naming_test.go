package tests

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// Two migrations of one source database, with different --slot, each have
// their own publication: cleaning up one leaves the other streaming. A
// migration created when every migration shared seren_replicator_pub keeps
// working without --publication, and cleanup of one of two such migrations
// keeps the shared publication for the other.
func TestMigrationsOfOneDatabaseHaveTheirOwnPublication(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE shop")
	src.Exec("shop", `CREATE TABLE orders (id int PRIMARY KEY, note text);
		INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 100) g`)
	migrate := func(t *testing.T, target, slot string, extra ...string) {
		t.Helper()
		res := runCLI(t, nil, append(initArgs(src, dst, "shop", target, "--slot", slot), extra...)...)
		if res.Code != 0 {
			t.Fatalf("init into %s: exit %d\n%s\n%s", target, res.Code, res.Stdout, res.Stderr)
		}
	}
	publications := func() string {
		return src.QueryString("shop", "SELECT coalesce(string_agg(pubname, ',' ORDER BY pubname), '') FROM pg_publication")
	}
	args := func(cmd, target, slot string, extra ...string) []string {
		return append([]string{cmd, "--source", src.DSN("shop"), "--target", dst.DSN(target), "--slot", slot}, extra...)
	}
	mustRun := func(t *testing.T, args ...string) Result {
		t.Helper()
		res := runCLI(t, nil, args...)
		if res.Code != 0 {
			t.Fatalf("%s: exit %d\n%s\n%s", args[0], res.Code, res.Stdout, res.Stderr)
		}
		return res
	}
	sameOrders := func(target string) bool {
		return fingerprint(dst, target, "orders") == fingerprint(src, "shop", "orders")
	}

	t.Run("each slot has its own publication", func(t *testing.T) {
		migrate(t, "shop_a", "seren_shop_a")
		migrate(t, "shop_b", "seren_shop_b")
		if got := publications(); got != "seren_shop_a_pub,seren_shop_b_pub" {
			t.Fatalf("publications %q, want one per slot", got)
		}
		daemon := startSync(t, nil, args("sync", "shop_b", "seren_shop_b")...)
		res := mustRun(t, args("cleanup", "shop_a", "seren_shop_a", "--yes")...)
		if !strings.Contains(res.Stdout, "dropped publication seren_shop_a_pub") {
			t.Errorf("cleanup does not report its publication:\n%s", res.Stdout)
		}
		if got := publications(); got != "seren_shop_b_pub" {
			t.Fatalf("publications after cleanup of a: %q, want seren_shop_b_pub", got)
		}
		src.Exec("shop", `INSERT INTO orders SELECT g, 'late' FROM generate_series(101, 150) g;
			UPDATE orders SET note = 'changed' WHERE id <= 10; DELETE FROM orders WHERE id BETWEEN 20 AND 25`)
		initWaitFor(t, time.Minute, "the other migration to apply the changes made after the cleanup", func() bool { return sameOrders("shop_b") })
		if daemon.ProcessState != nil {
			t.Fatalf("the other migration's sync exited:\n%s", syncLog(daemon))
		}
		daemon.Process.Signal(syscall.SIGTERM)
		if err := daemon.Wait(); err != nil {
			t.Fatalf("sync: %v\n%s", err, syncLog(daemon))
		}
		mustRun(t, args("status", "shop_b", "seren_shop_b")...)
		mustRun(t, args("verify", "shop_b", "seren_shop_b")...)
		mustRun(t, args("cleanup", "shop_b", "seren_shop_b", "--yes")...)
		if got := publications(); got != "" {
			t.Errorf("publications left: %q", got)
		}
	})

	// Before publications were named per slot, every migration used
	// seren_replicator_pub: init --publication seren_replicator_pub makes
	// such migrations; the commands below are given no --publication.
	t.Run("migrations sharing the publication of before", func(t *testing.T) {
		migrate(t, "shop_c", "seren_shop_c", "--publication", "seren_replicator_pub")
		migrate(t, "shop_d", "seren_shop_d", "--publication", "seren_replicator_pub")
		src.Exec("shop", `INSERT INTO orders SELECT g, 'legacy' FROM generate_series(151, 160) g`)
		for _, m := range []struct{ target, slot string }{{"shop_c", "seren_shop_c"}, {"shop_d", "seren_shop_d"}} {
			mustRun(t, args("sync", m.target, m.slot, "--catch-up")...)
			if !sameOrders(m.target) {
				t.Fatalf("%s differs from the source after sync --catch-up", m.target)
			}
			st := mustRun(t, args("status", m.target, m.slot)...)
			if strings.Contains(st.Stdout, "does not exist") {
				t.Errorf("status of %s misses the publication:\n%s", m.target, st.Stdout)
			}
			mustRun(t, args("verify", m.target, m.slot)...)
		}
		res := mustRun(t, args("cleanup", "shop_c", "seren_shop_c", "--yes")...)
		if !strings.Contains(res.Stdout, "kept publication seren_replicator_pub: slot seren_shop_d may still stream from it") {
			t.Errorf("cleanup of one of two migrations sharing the publication does not keep it:\n%s", res.Stdout)
		}
		if got := publications(); got != "seren_replicator_pub" {
			t.Fatalf("publications after cleanup of c: %q", got)
		}
		src.Exec("shop", `UPDATE orders SET note = 'after c' WHERE id > 150`)
		mustRun(t, args("sync", "shop_d", "seren_shop_d", "--catch-up")...)
		if !sameOrders("shop_d") {
			t.Fatalf("shop_d differs from the source after the other migration's cleanup")
		}
		res = mustRun(t, args("cleanup", "shop_d", "seren_shop_d", "--yes")...)
		if !strings.Contains(res.Stdout, "dropped publication seren_replicator_pub") {
			t.Errorf("cleanup of the last migration does not drop the shared publication:\n%s", res.Stdout)
		}
	})
}

// validate takes the names init uses (--slot, --publication,
// --checkpoint-schema) and --drop-existing, and fails where init refuses: a
// slot that exists without a migration on the target, or that is in use.
func TestValidateChecksTheNamesInitUses(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE app")
	src.Exec("postgres", "CREATE DATABASE other")
	src.Exec("app", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	src.Exec("app", "SELECT pg_create_logical_replication_slot('taken', 'pgoutput'); CREATE PUBLICATION holder")
	validate := func(extra ...string) Result {
		return runCLI(t, nil, append([]string{"validate", "--source", src.DSN("app"), "--target", dst.DSN("app")}, extra...)...)
	}

	t.Run("a slot that exists", func(t *testing.T) {
		v := validate("--slot", "taken")
		if v.Code != 1 || !strings.Contains(v.Stdout, "slot taken already exists on the source") {
			t.Errorf("validate --slot taken: exit %d, want 1 saying the slot exists\n%s", v.Code, v.Stdout)
		}
		res := runCLI(t, nil, initArgs(src, dst, "app", "app", "--slot", "taken")...)
		if res.Code == 0 || !strings.Contains(res.Stderr, "already exists") {
			t.Errorf("init --slot taken: exit %d, want a refusal\n%s", res.Code, res.Stderr)
		}
		if v := validate("--slot", "taken", "--drop-existing"); v.Code != 0 || !strings.Contains(v.Stdout, "init drops it") {
			t.Errorf("validate --slot taken --drop-existing: exit %d, want 0 with a warning\n%s", v.Code, v.Stdout)
		}
		if v := validate(); v.Code != 0 || !strings.Contains(v.Stdout, "slot seren_app does not exist yet") {
			t.Errorf("validate with the default slot: exit %d\n%s", v.Code, v.Stdout)
		}
	})

	t.Run("a slot in use", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgconn.Connect(ctx, src.DSN("app")+" replication=database")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if err := pglogrepl.StartReplication(ctx, conn, "taken", 0, pglogrepl.StartReplicationOptions{
			PluginArgs: []string{"proto_version '1'", "publication_names 'holder'"},
		}); err != nil {
			t.Fatal(err)
		}
		v := validate("--slot", "taken", "--drop-existing")
		if v.Code != 1 || !strings.Contains(v.Stdout, "slot taken exists and is in use") {
			t.Errorf("validate of a slot in use: exit %d, want 1\n%s", v.Code, v.Stdout)
		}
		res := runCLI(t, nil, initArgs(src, dst, "app", "app", "--slot", "taken", "--drop-existing")...)
		if res.Code == 0 || !strings.Contains(res.Stderr, "in use") {
			t.Errorf("init of a slot in use: exit %d, want a refusal\n%s", res.Code, res.Stderr)
		}
	})

	t.Run("names of a migration made with them", func(t *testing.T) {
		names := []string{"--slot", "mine", "--publication", "mypub", "--checkpoint-schema", "mystate"}
		if res := runCLI(t, nil, initArgs(src, dst, "app", "app", names...)...); res.Code != 0 {
			t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
		}
		if v := validate(names...); v.Code != 0 || !strings.Contains(v.Stdout, "slot mine exists and holds the WAL since the target checkpoint") {
			t.Errorf("validate with init's names: exit %d, want 0 finding the migration\n%s", v.Code, v.Stdout)
		}
		// Without --checkpoint-schema, validate looks where init would
		// look for the migration of slot mine, and finds none.
		if v := validate("--slot", "mine"); v.Code != 1 || !strings.Contains(v.Stdout, "slot mine already exists") {
			t.Errorf("validate without init's checkpoint schema: exit %d, want 1\n%s", v.Code, v.Stdout)
		}
		if v := validate("--slot", "yours", "--publication", "mypub", "--checkpoint-schema", "mystate"); !strings.Contains(v.Stdout, "publication mypub already exists") {
			t.Errorf("validate of another migration with the same publication does not warn:\n%s", v.Stdout)
		}
		if v := validate("--checkpoint-schema", ""); v.Code != 2 {
			t.Errorf("validate --checkpoint-schema '': exit %d, want 2", v.Code)
		}
	})

	t.Run("--slot with several databases", func(t *testing.T) {
		v := runCLI(t, nil, "validate", "--source", src.DSN("postgres"), "--target", dst.DSN("postgres"), "--slot", "x")
		if v.Code != 2 || !strings.Contains(v.Stderr, "--slot names one slot") {
			t.Errorf("exit %d, want 2\n%s", v.Code, v.Stderr)
		}
	})
}

// noDatabase is a connection string for c that names no database.
func noDatabase(c *pgtest.Cluster) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s sslmode=disable", c.Port, pgtest.SuperUser)
}

// A target URL without a database means the source's database name, for
// every command that takes --target; and the postgres database, left out
// of "every database", is migrated when named.
func TestTargetWithoutDatabaseAndThePostgresDatabase(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE app")
	src.Exec("app", "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 50) g")
	src.Exec("postgres", "CREATE TABLE maint (id int PRIMARY KEY, v text); INSERT INTO maint SELECT g, 'm' || g FROM generate_series(1, 20) g")

	t.Run("target without a database", func(t *testing.T) {
		targets := []string{noDatabase(dst), fmt.Sprintf("postgres://%s@127.0.0.1:%d?sslmode=disable", pgtest.SuperUser, dst.Port)}
		run := func(t *testing.T, target string, args ...string) Result {
			t.Helper()
			res := runCLI(t, nil, append([]string{args[0], "--source", src.DSN("app"), "--target", target}, args[1:]...)...)
			if res.Code != 0 || strings.Contains(res.Stderr, "zero-length") {
				t.Fatalf("%s: exit %d\n%s\n%s", args[0], res.Code, res.Stdout, res.Stderr)
			}
			return res
		}
		for _, target := range targets {
			run(t, target, "validate")
		}
		run(t, targets[0], "init", "--yes")
		assertSameRows(t, src, dst, "app", "app", []string{"t"})
		src.Exec("app", "INSERT INTO t SELECT g, 'late' FROM generate_series(51, 60) g")
		run(t, targets[1], "sync", "--catch-up")
		assertSameRows(t, src, dst, "app", "app", []string{"t"})
		run(t, targets[0], "status")
		run(t, targets[1], "verify")
		res := run(t, targets[1], "cutover", "--yes", "--grace", "0s")
		if !strings.Contains(res.Stdout, "compared one by one") {
			t.Errorf("cutover output:\n%s", res.Stdout)
		}
		src.Exec("postgres", "ALTER DATABASE app RESET default_transaction_read_only")
		run(t, targets[0], "cleanup", "--yes")
		if got := dst.QueryString("app", "SELECT count(*) FROM pg_namespace WHERE nspname = 'seren_replicator'"); got != "0" {
			t.Errorf("cleanup left the checkpoint schema")
		}
	})

	t.Run("the postgres database when named", func(t *testing.T) {
		all := []string{"--source", src.DSN("postgres"), "--target", dst.DSN("postgres")}
		v := runCLI(t, nil, append([]string{"validate"}, all...)...)
		if strings.Contains(v.Stdout, "(postgres)") {
			t.Errorf("validate of every database checks the postgres database:\n%s", v.Stdout)
		}
		named := append(all, "--include-databases", "postgres")
		for _, args := range [][]string{append([]string{"validate"}, named...), append([]string{"init", "--yes"}, named...)} {
			if res := runCLI(t, nil, args...); res.Code != 0 {
				t.Fatalf("%s: exit %d\n%s\n%s", args[0], res.Code, res.Stdout, res.Stderr)
			}
		}
		assertSameRows(t, src, dst, "postgres", "postgres", []string{"maint"})
		src.Exec("postgres", "UPDATE maint SET v = 'changed' WHERE id < 5; INSERT INTO maint VALUES (21, 'new')")
		for _, cmd := range [][]string{{"sync", "--catch-up"}, {"status"}, {"verify"}} {
			if res := runCLI(t, nil, append(cmd, named...)...); res.Code != 0 {
				t.Fatalf("%s: exit %d\n%s\n%s", cmd[0], res.Code, res.Stdout, res.Stderr)
			}
		}
		assertSameRows(t, src, dst, "postgres", "postgres", []string{"maint"})
		if res := runCLI(t, nil, append([]string{"cleanup", "--yes"}, named...)...); res.Code != 0 || !strings.Contains(res.Stdout, "dropped replication slot seren_postgres") {
			t.Fatalf("cleanup: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
		}
	})
}
