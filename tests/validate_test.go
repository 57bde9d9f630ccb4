package tests

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/preflight"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// validateChecks resolves the plan for source and target and runs the
// preflight checks in process.
func validateChecks(t *testing.T, source, target string, opts preflight.Options) []preflight.Check {
	t.Helper()
	checks, err := validateChecksErr(t, source, target, opts)
	if err != nil {
		t.Fatalf("preflight: %v", err)
	}
	return checks
}

func validateChecksErr(t *testing.T, source, target string, opts preflight.Options) ([]preflight.Check, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, err := conninfo.Parse(source)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := conninfo.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Resolve(ctx, src, dst, selection.Filter{})
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	return preflight.Run(ctx, p, opts)
}

// wantCheck finds the check called name (of database db, "" for server-wide
// checks) and asserts its status and that its detail and fix contain want.
func wantCheck(t *testing.T, checks []preflight.Check, name, db string, status preflight.Status, want ...string) preflight.Check {
	t.Helper()
	for _, c := range checks {
		if c.Name != name || c.Database != db {
			continue
		}
		if c.Status != status {
			t.Errorf("check %q (%s): status = %s, want %s; detail: %s; fix: %s", name, db, c.Status, status, c.Detail, c.Fix)
		}
		for _, w := range want {
			if !strings.Contains(c.Detail+"\n"+c.Fix, w) {
				t.Errorf("check %q (%s): %q not in detail %q / fix %q", name, db, w, c.Detail, c.Fix)
			}
		}
		return c
	}
	t.Fatalf("no check %q for database %q in %+v", name, db, checks)
	return preflight.Check{}
}

// fakePgDump writes a script that reports itself as pg_dump of version.
func fakePgDump(t *testing.T, version string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pg_dump")
	script := "#!/bin/sh\necho 'pg_dump (PostgreSQL) " + version + "'\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestValidateManagedTarget is the main customer: a target role that is no
// superuser, with what a managed service grants, and a source role with
// REPLICATION that owns its tables.
func TestValidateManagedTarget(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	const srcPW, dstPW = "src-Secret-91", "dst-Secret-73"
	src.CreateRole("app_src", srcPW, "REPLICATION")
	src.Exec("postgres", "CREATE DATABASE app OWNER app_src")
	src.Exec("app", `SET ROLE app_src;
		CREATE TABLE orders (id bigint PRIMARY KEY, note text);
		CREATE TABLE items (id int PRIMARY KEY, order_id bigint REFERENCES orders);
		RESET ROLE; CREATE EXTENSION pg_trgm`)
	dst.CreateRole("app_dst", dstPW, "CREATEDB")
	dst.Exec("postgres", "GRANT pg_monitor TO app_dst")
	source := src.URL("app_src", srcPW, "app")
	target := dst.URL("app_dst", dstPW, "app")

	t.Run("target database created by the role", func(t *testing.T) {
		res := runCLI(t, nil, "validate", "--source", source, "--target", target)
		if res.Code != 0 {
			t.Fatalf("exit code = %d, want 0\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
		}
		for _, want := range []string{"apply mode: ordered", "init creates it", "STATUS", "pass", "available on the target: pg_trgm"} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, res.Stdout)
			}
		}
		assertNoSecret(t, res, srcPW, dstPW)

		js := runCLI(t, nil, "validate", "--json", "--source", source, "--target", target)
		if js.Code != 0 {
			t.Fatalf("--json exit code = %d, want 0; stderr: %s", js.Code, js.Stderr)
		}
		var report struct {
			OK     bool
			Checks []preflight.Check
		}
		if err := json.Unmarshal([]byte(js.Stdout), &report); err != nil {
			t.Fatalf("--json output is not JSON: %v\n%s", err, js.Stdout)
		}
		if !report.OK || len(report.Checks) < 12 {
			t.Errorf("--json: ok = %v with %d checks, want ok with every check:\n%s", report.OK, len(report.Checks), js.Stdout)
		}
		for _, c := range report.Checks {
			if c.Status == preflight.Fail {
				t.Errorf("check %q failed: %s", c.Name, c.Detail)
			}
		}
		assertNoSecret(t, js, srcPW, dstPW)
	})

	t.Run("no CREATEDB", func(t *testing.T) {
		dst.CreateRole("app_nocreate", dstPW)
		checks := validateChecks(t, source, dst.URL("app_nocreate", dstPW, "app"), preflight.Options{})
		wantCheck(t, checks, "target database", "app", preflight.Fail, `ALTER ROLE "app_nocreate" CREATEDB;`)
	})

	// The provider made the database (owned by its own admin role) and the
	// user restored part of the schema: existing tables must be writable,
	// missing ones creatable.
	dst.Exec("postgres", "CREATE DATABASE app")
	dst.Exec("postgres", "GRANT CREATE ON DATABASE app TO app_dst")
	dst.Exec("app", "CREATE TABLE orders (id bigint PRIMARY KEY, note text); GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO app_dst")

	t.Run("existing target tables", func(t *testing.T) {
		checks := validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "target database", "app", preflight.Pass, "exists")
		wantCheck(t, checks, "checkpoint schema", "app", preflight.Pass, "may create schema seren_replicator")
		wantCheck(t, checks, "target tables", "app", preflight.Fail,
			"public.orders exists but app_dst may not write it", `GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON "public"."orders" TO "app_dst";`,
			"public.items is missing", `GRANT USAGE, CREATE ON SCHEMA "public" TO "app_dst";`)

		dst.Exec("app", "GRANT TRUNCATE ON orders TO app_dst; GRANT CREATE ON SCHEMA public TO app_dst")
		checks = validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "target tables", "app", preflight.Fail, "public.orders is owned by another role, but ordered mode disables its triggers",
			`GRANT SET ON PARAMETER session_replication_role TO "app_dst";`, `ALTER TABLE "public"."orders" OWNER TO "app_dst";`)
		dst.Exec("app", "ALTER TABLE orders ADD COLUMN n int GENERATED ALWAYS AS IDENTITY")
		dst.Exec("postgres", "GRANT SET ON PARAMETER session_replication_role TO app_dst")
		checks = validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "target tables", "app", preflight.Fail, "public.orders is owned by another role, but its identity columns")
		dst.Exec("app", "ALTER TABLE orders DROP COLUMN n")
		checks = validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "target tables", "app", preflight.Pass, "1 selected tables exist and are writable, 1 will be created")
		dst.Exec("postgres", "REVOKE SET ON PARAMETER session_replication_role FROM app_dst")
	})

	t.Run("checkpoint schema", func(t *testing.T) {
		dst.Exec("postgres", "REVOKE CREATE ON DATABASE app FROM app_dst")
		checks := validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "checkpoint schema", "app", preflight.Fail, `GRANT CREATE ON DATABASE "app" TO "app_dst";`)

		dst.Exec("app", "CREATE SCHEMA seren_replicator")
		checks = validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "checkpoint schema", "app", preflight.Fail, `GRANT USAGE, CREATE ON SCHEMA "seren_replicator" TO "app_dst";`)

		dst.Exec("app", "DROP SCHEMA seren_replicator; CREATE SCHEMA seren_replicator AUTHORIZATION app_dst")
		checks = validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "checkpoint schema", "app", preflight.Pass, "exists")
	})

	t.Run("apply mode", func(t *testing.T) {
		checks := validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "apply mode", "", preflight.Pass, "apply mode: ordered", "disabled for the migration")
		dst.Exec("postgres", "GRANT SET ON PARAMETER session_replication_role TO app_dst")
		checks = validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "apply mode", "", preflight.Pass, "apply mode: replica")
		if n := preflight.Failed(checks); n != 0 {
			t.Errorf("%d checks failed with every grant given: %+v", n, checks)
		}
	})
}

// TestValidateSourceChecks covers the source role, table and slot checks,
// pass and fail side, and pg_dump.
func TestValidateSourceChecks(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	const pw = "Source-Pw-5521"
	src.CreateRole("src_user", pw)
	src.Exec("postgres", "CREATE DATABASE app")
	src.Exec("postgres", "CREATE DATABASE shop")
	src.Exec("app", `CREATE TABLE t1 (id int PRIMARY KEY); CREATE TABLE t2 (id int PRIMARY KEY);
		CREATE TABLE t_nopk (a int, b text);
		CREATE TABLE t_idx (a int NOT NULL, b text); CREATE UNIQUE INDEX t_idx_a ON t_idx (a);
		ALTER TABLE t_idx REPLICA IDENTITY USING INDEX t_idx_a;
		CREATE TABLE p (id int, k int) PARTITION BY RANGE (k);
		CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);
		GRANT SELECT ON t1, t_nopk, t_idx, p TO src_user`)
	src.Exec("shop", "CREATE TABLE s (id int PRIMARY KEY)")
	source := src.URL("src_user", pw, "app")
	target := dst.DSN("app")

	t.Run("role without REPLICATION", func(t *testing.T) {
		checks := validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "source replication role", "", preflight.Fail, `ALTER ROLE "src_user" REPLICATION;`, "rds_replication")
		wantCheck(t, checks, "source table privileges", "app", preflight.Fail, "lacks SELECT on public.t2",
			`GRANT SELECT ON "public"."t2" TO "src_user";`)
		wantCheck(t, checks, "source publication rights", "app", preflight.Fail,
			`GRANT CREATE ON DATABASE "app" TO "src_user";`, `ALTER TABLE "public"."t1" OWNER TO "src_user";`)
		wantCheck(t, checks, "replica identity", "app", preflight.Fail, "public.t_nopk", "public.p1",
			"reject UPDATE and DELETE", `ALTER TABLE "public"."t_nopk" REPLICA IDENTITY FULL;`, "--replica-identity-full", "--exclude-tables app.public.p1,app.public.t_nopk")
		if c := wantCheck(t, checks, "replica identity", "app", preflight.Fail); strings.Contains(c.Detail, "t_idx") {
			t.Errorf("t_idx has REPLICA IDENTITY USING INDEX, yet it is reported: %s", c.Detail)
		}
	})

	t.Run("rds_replication member", func(t *testing.T) {
		src.Exec("postgres", "CREATE ROLE rds_replication NOLOGIN; GRANT rds_replication TO src_user")
		checks := validateChecks(t, source, target, preflight.Options{})
		// Plain PostgreSQL gives the role no replication right, so the test
		// connection is refused: the check must say so rather than trust it.
		wantCheck(t, checks, "source replication role", "", preflight.Fail, "member of rds_replication", "refuses a replication connection")
	})

	t.Run("everything granted", func(t *testing.T) {
		src.Exec("postgres", "ALTER ROLE src_user REPLICATION; GRANT CREATE ON DATABASE app TO src_user")
		src.Exec("app", `GRANT SELECT ON t2 TO src_user;
			ALTER TABLE t1 OWNER TO src_user; ALTER TABLE t2 OWNER TO src_user; ALTER TABLE t_nopk OWNER TO src_user;
			ALTER TABLE t_idx OWNER TO src_user; ALTER TABLE p OWNER TO src_user;
			ALTER TABLE t_nopk REPLICA IDENTITY FULL; ALTER TABLE p1 ADD PRIMARY KEY (id, k)`)
		checks := validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "source replication role", "", preflight.Pass, "replication connection accepted")
		wantCheck(t, checks, "source table privileges", "app", preflight.Pass)
		wantCheck(t, checks, "source publication rights", "app", preflight.Pass)
		wantCheck(t, checks, "replica identity", "app", preflight.Pass, "all 5 tables")
		wantCheck(t, checks, "wal_level", "", preflight.Pass)
		wantCheck(t, checks, "replication slots", "", preflight.Pass)
		wantCheck(t, checks, "wal senders", "", preflight.Pass)
		wantCheck(t, checks, "pg_dump version", "", preflight.Pass, "is version 15")
		if n := preflight.Failed(checks); n != 0 {
			t.Errorf("%d checks failed: %+v", n, checks)
		}
	})

	t.Run("pg_dump too old or missing", func(t *testing.T) {
		checks := validateChecks(t, source, target, preflight.Options{PgDump: fakePgDump(t, "11.22")})
		wantCheck(t, checks, "pg_dump version", "", preflight.Fail, "version 11, older than the source (15)", "postgresql-client-15")
		checks = validateChecks(t, source, target, preflight.Options{PgDump: filepath.Join(t.TempDir(), "no-pg_dump")})
		wantCheck(t, checks, "pg_dump version", "", preflight.Fail, "no-pg_dump")

		res := runCLI(t, []string{"PG_DUMP=" + fakePgDump(t, "9.6.24")}, "validate", "--source", source, "--target", target)
		if res.Code != 1 || !strings.Contains(res.Stdout, "version 9, older than the source") {
			t.Errorf("PG_DUMP of 9.6: exit code %d, want 1 and a pg_dump failure:\n%s\n%s", res.Code, res.Stdout, res.Stderr)
		}
		assertOneLineError(t, res)
	})

	t.Run("extensions", func(t *testing.T) {
		src.Exec("app", "CREATE EXTENSION pg_trgm")
		checks := validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "extensions", "app", preflight.Pass, "pg_trgm")
		// Both clusters share one installation; renaming the extension in
		// the source catalog makes it one the target cannot install.
		src.Exec("app", "UPDATE pg_extension SET extname = 'seren_missing_ext' WHERE extname = 'pg_trgm'")
		checks = validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "extensions", "app", preflight.Fail, "seren_missing_ext")
	})

	t.Run("inactive slot retaining WAL", func(t *testing.T) {
		src.Exec("app", "SELECT pg_create_logical_replication_slot('other_tool', 'pgoutput')")
		src.Exec("app", "CREATE TABLE filler AS SELECT g FROM generate_series(1, 10000) g")
		checks := validateChecks(t, source, target, preflight.Options{RetainedWALWarn: 1024})
		wantCheck(t, checks, "inactive slots", "", preflight.Warn, "other_tool", "pg_drop_replication_slot('other_tool')", "cleanup")
		checks = validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "inactive slots", "", preflight.Pass)
	})

	t.Run("same database", func(t *testing.T) {
		_, err := validateChecksErr(t, source, src.DSN("app"), preflight.Options{})
		if !errors.Is(err, preflight.ErrSameDatabase) || !errors.Is(err, conninfo.ErrConfig) {
			t.Fatalf("err = %v, want ErrSameDatabase as a configuration error", err)
		}
		checks := validateChecks(t, source, src.DSN("shop"), preflight.Options{})
		wantCheck(t, checks, "source and target differ", "", preflight.Pass, "same server, different databases")
	})

	// Slots this tool created earlier (a previous init) are not counted
	// against the free slots a run needs. Physical slots that reserve no WAL
	// fill max_replication_slots = 20 cheaply.
	t.Run("own slots count as available", func(t *testing.T) {
		src.Exec("app", `SELECT pg_create_logical_replication_slot('seren_app', 'pgoutput');
			SELECT pg_create_physical_replication_slot('fill_' || g) FROM generate_series(1, 18) g`)
		checks := validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "replication slots", "", preflight.Pass, "20 of max_replication_slots = 20 in use", "1 already exist")
		src.Exec("app", `SELECT pg_drop_replication_slot('seren_app'); SELECT pg_create_physical_replication_slot('fill_19')`)
		checks = validateChecks(t, source, target, preflight.Options{})
		wantCheck(t, checks, "replication slots", "", preflight.Fail, "ALTER SYSTEM SET max_replication_slots = 21")
		src.Exec("app", `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'fill\_%'`)
	})

	t.Run("every database of the server", func(t *testing.T) {
		src.Exec("shop", "GRANT SELECT ON s TO src_user")
		checks := validateChecks(t, src.URL("src_user", pw, "postgres"), dst.DSN("postgres"), preflight.Options{})
		wantCheck(t, checks, "source table privileges", "shop", preflight.Pass)
		wantCheck(t, checks, "source publication rights", "shop", preflight.Fail, `ALTER TABLE "public"."s" OWNER TO "src_user";`)
		wantCheck(t, checks, "target database", "shop", preflight.Pass, "init creates it")
		wantCheck(t, checks, "replication slots", "", preflight.Pass, "needs 2")
	})
}

// TestValidateSourceSettings runs validate against a source that is not set
// up for logical replication at all.
func TestValidateSourceSettings(t *testing.T) {
	src := pgtest.Start(t, pgtest.Options{Settings: []string{"wal_level = replica", "max_replication_slots = 0", "max_wal_senders = 0"}})
	src.Exec("postgres", "CREATE DATABASE app")
	src.Exec("app", "CREATE TABLE t (id int PRIMARY KEY)")
	// Another database of the same server is a legitimate target.
	res := runCLI(t, nil, "validate", "--source", src.DSN("app"), "--target", src.DSN("app_copy"))
	if res.Code != 1 {
		t.Fatalf("exit code = %d, want 1\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	for _, want := range []string{
		"FAIL    wal_level", "ALTER SYSTEM SET wal_level = logical",
		"FAIL    replication slots", "ALTER SYSTEM SET max_replication_slots = 1",
		"FAIL    wal senders", "ALTER SYSTEM SET max_wal_senders = 1",
	} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, res.Stdout)
		}
	}
	assertOneLineError(t, res)
	if !strings.Contains(res.Stderr, "3 of ") {
		t.Errorf("stderr does not count 3 failed checks: %s", res.Stderr)
	}
}
