package tests

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// A captured command that touched nothing on the source (DROP TABLE IF
// EXISTS, ALTER TABLE IF EXISTS of a table the source lacks) must not run
// on the target: there it would drop the copy of a table the source
// dropped, which the migration keeps, or a table of the target's own. And
// a trigger the source creates on a carried table must not fire on the
// rows sync applies (ordered mode holds user triggers): the source's rows
// already carry its effect. A password in a query string that also runs
// DDL is kept neither in the capture table nor in sync's output. In both
// apply modes.
func TestDDLCaptureAttackNoOpsAndTriggers(t *testing.T) {
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			src, dst := pgtestPair(t)
			prepareStreaming(t, src, dst, "atk", `CREATE TABLE t (id int PRIMARY KEY, a int);
				CREATE TABLE t2 (id int PRIMARY KEY);
				CREATE SCHEMA app2; CREATE TABLE app2.k (id int PRIMARY KEY);`, "public.t", "public.t2", "app2.k")
			dst.Exec("atk", `CREATE TABLE target_only (id int PRIMARY KEY); INSERT INTO target_only VALUES (1), (2)`)
			target := ddlTarget(t, dst, mode, "atk", "TABLE t", "TABLE t2", "TABLE target_only", "TABLE app2.k")
			if mode == "ordered" {
				dst.Exec("atk", `GRANT USAGE ON SCHEMA app2 TO applier`)
			}
			source := src.URL("postgres", "", "atk")
			// Both tables written once, so their source OIDs are known, as after init.
			src.Exec("atk", `INSERT INTO t2 VALUES (1), (2), (3); INSERT INTO t VALUES (0, 0); INSERT INTO app2.k VALUES (1), (2)`)
			res := runCLI(t, nil, "sync", "--catch-up", "--ddl-capture", "--source", source, "--target", target, "--include-tables", "atk.public.t,atk.public.t2,atk.app2.k")
			if res.Code != 0 {
				t.Fatalf("sync --catch-up --ddl-capture: exit %d\n%s", res.Code, res.Stderr)
			}
			for _, stmt := range []string{
				`CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.a := NEW.a + 1; RETURN NEW; END$$`,
				`CREATE TRIGGER bump BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION bump()`,
				`INSERT INTO t VALUES (1, 10)`,
				`DROP TABLE t2`,
				// Idempotent migration scripts: no-ops on the source.
				`DROP TABLE IF EXISTS t2`,
				`DROP TABLE IF EXISTS target_only`,
				`INSERT INTO t VALUES (2, 20)`,
				// The schema of a table the source dropped, whose copy the
				// target keeps.
				`DROP TABLE app2.k`,
				`DROP SCHEMA app2 CASCADE`,
				// A password in a query string with DDL.
				`CREATE INDEX pw_i ON t (a); CREATE ROLE pwrole LOGIN PASSWORD 'hunter2secret'`,
			} {
				src.Exec("atk", stmt)
			}
			res = runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target)
			if res.Code != 0 {
				t.Fatalf("sync --catch-up: exit %d\n%s", res.Code, res.Stderr)
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("sync log:\n%s", res.Stderr)
				}
			})
			assertSameTables(t, src, dst, "atk", "t")
			if got := dst.QueryString("atk", `SELECT count(*) FROM t2`); got != "3" {
				t.Errorf("the target's copy of t2, dropped on the source, holds %s rows: want 3 (kept)", got)
			}
			if got := dst.QueryString("atk", `SELECT count(*) FROM pg_class WHERE relname = 'target_only'`); got != "1" {
				t.Errorf("a table of the target's own was dropped by a DROP TABLE IF EXISTS that did nothing on the source")
			}
			if got := dst.QueryString("atk", `SELECT count(*) FROM pg_class WHERE oid = to_regclass('app2.k')`); got != "1" {
				t.Errorf("the target's copy of app2.k, dropped on the source, went with a DROP SCHEMA app2 CASCADE")
			}
			if strings.Contains(res.Stdout+res.Stderr, "hunter2secret") {
				t.Errorf("sync printed a password the source's query string held")
			}
			if got := src.QueryString("atk", `SELECT count(*) FROM seren_replicator.ddl_log WHERE statement LIKE '%hunter2secret%'`); got != "0" {
				t.Errorf("the capture table on the source keeps a password (%s rows)", got)
			}
			if strings.Contains(res.Stderr, "DROP TABLE IF EXISTS") && !strings.Contains(res.Stderr, "touched nothing on the source") {
				t.Errorf("no log line for the no-op statements")
			}
		})
	}
}

// A plain role of the source that owns a carried table must not gain, on
// the target, the rights of the role sync applies as: a captured statement
// runs there as that role (the target's superuser in replica mode), so a
// function of the plain role's making that a CHECK constraint's validation
// calls runs as superuser on the target, where on the source it ran as the
// plain role.
func TestDDLCaptureAttackPlainRoleGainsTargetSuperuser(t *testing.T) {
	longTest(t)
	t.Skip("not fixed: in replica mode the target's superuser runs what a plain source role wrote: a captured ALTER TABLE … CHECK (f(x)) validates by calling the role's f as superuser; the same holds without --ddl-capture (the index comparison validates the constraint, and every applied row evaluates it as superuser); fix: apply as each table's owner (SET ROLE, as PostgreSQL 16's run_as_owner = false does)")
	src, dst := pgtestPair(t)
	for _, c := range []*pgtest.Cluster{src, dst} {
		c.CreateRole("app", "app-pw")
	}
	prepareStreaming(t, src, dst, "esc", `GRANT CREATE ON SCHEMA public TO app;
		CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t OWNER TO app`, "public.t")
	src.Exec("esc", `INSERT INTO t VALUES (1)`)
	source := src.URL("postgres", "", "esc")
	target := dst.URL("postgres", "", "esc")
	res := runCLI(t, nil, "sync", "--catch-up", "--ddl-capture", "--source", source, "--target", target, "--include-tables", "esc.public.t")
	if res.Code != 0 {
		t.Fatalf("sync --catch-up --ddl-capture: exit %d\n%s", res.Code, res.Stderr)
	}
	ctx := context.Background()
	app, err := pgx.Connect(ctx, src.URL("app", "app-pw", "esc"))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	for _, stmt := range []string{
		`CREATE FUNCTION public.pwn(int) RETURNS boolean LANGUAGE plpgsql AS $$BEGIN
			IF current_setting('is_superuser') = 'on' THEN EXECUTE 'ALTER ROLE app SUPERUSER'; END IF;
			RETURN true; END$$`,
		`ALTER TABLE t ADD CONSTRAINT ok CHECK (public.pwn(id))`,
	} {
		if _, err := app.Exec(ctx, stmt); err != nil {
			t.Fatalf("as app on the source: %v\n%s", err, stmt)
		}
	}
	res = runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target, "--include-tables", "esc.public.t")
	if res.Code != 0 {
		t.Fatalf("sync --catch-up: exit %d\n%s", res.Code, res.Stderr)
	}
	if got := src.QueryString("esc", `SELECT rolsuper FROM pg_roles WHERE rolname = 'app'`); got != "false" {
		t.Fatalf("app is a superuser on the source: %s", got)
	}
	if got := dst.QueryString("esc", `SELECT rolsuper FROM pg_roles WHERE rolname = 'app'`); got != "false" {
		t.Errorf("the source's plain role app became a superuser on the target through a captured statement\n%s", res.Stderr)
	}
}

// A captured statement runs on the target under the source session's
// search_path, whose "$user" must name the source session's role there,
// not the role sync applies as: with PostgreSQL's default search_path
// ("$user", public) and a schema per role, an unqualified name of the
// role's table must not reach the table of the same name in public. In
// both apply modes.
func TestDDLCaptureAttackUserSchemaInSearchPath(t *testing.T) {
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			src, dst := pgtestPair(t)
			for _, c := range []*pgtest.Cluster{src, dst} {
				c.CreateRole("app", "app-pw")
			}
			prepareStreaming(t, src, dst, "usr", `CREATE SCHEMA app AUTHORIZATION app;
				CREATE TABLE app.t (id int PRIMARY KEY, c int, e int); ALTER TABLE app.t OWNER TO app;
				CREATE TABLE public.t (id int PRIMARY KEY, c int, e int);`, "app.t", "public.t")
			target := ddlTarget(t, dst, mode, "usr", "TABLE app.t", "TABLE public.t")
			if mode == "ordered" {
				dst.Exec("usr", `GRANT USAGE, CREATE ON SCHEMA app TO applier`)
			}
			src.Exec("usr", `INSERT INTO app.t VALUES (1, 1, 1); INSERT INTO public.t VALUES (1, 1, 1)`)
			source := src.URL("postgres", "", "usr")
			res := runCLI(t, nil, "sync", "--catch-up", "--ddl-capture", "--source", source, "--target", target, "--include-tables", "usr.app.t,usr.public.t")
			if res.Code != 0 {
				t.Fatalf("sync --catch-up --ddl-capture: exit %d\n%s", res.Code, res.Stderr)
			}
			ctx := context.Background()
			app, err := pgx.Connect(ctx, src.URL("app", "app-pw", "usr"))
			if err != nil {
				t.Fatal(err)
			}
			defer app.Close(ctx)
			if _, err := app.Exec(ctx, `ALTER TABLE t DROP COLUMN c`); err != nil { // app.t on the source
				t.Fatal(err)
			}
			// The same through SET ROLE in a superuser's session.
			admin := src.Connect("usr")
			for _, stmt := range []string{`SET ROLE app`, `ALTER TABLE t DROP COLUMN e`} {
				if _, err := admin.Exec(ctx, stmt); err != nil {
					t.Fatal(err)
				}
			}
			src.Exec("usr", `INSERT INTO app.t VALUES (2); INSERT INTO public.t VALUES (2, 2, 2)`)
			res = runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target, "--include-tables", "usr.app.t,usr.public.t")
			if res.Code != 0 {
				t.Fatalf("sync --catch-up: exit %d\n%s", res.Code, res.Stderr)
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("sync log:\n%s", res.Stderr)
				}
			})
			assertSameTables(t, src, dst, "usr", "app.t", "public.t")
		})
	}
}

// Row-level security the source turns on for a carried table's owner
// (FORCE ROW LEVEL SECURITY, with a policy) reaches the target through a
// captured statement; in ordered mode sync applies as the owner of the
// target's tables, and must still apply every row. The table is held
// without FORCE while the migration runs; a captured NO FORCE ends the
// hold (cleanup must not force it again), a FORCE after it holds again,
// and cleanup leaves the target forced as the source is.
func TestDDLCaptureAttackForcedRowSecurityOrdered(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "rls", `CREATE TABLE t (id int PRIMARY KEY, who text)`, "public.t")
	target := ddlTarget(t, dst, "ordered", "rls", "TABLE t")
	src.Exec("rls", `INSERT INTO t VALUES (0, 'x')`)
	source := src.URL("postgres", "", "rls")
	catchUp := func(step string, args ...string) {
		t.Helper()
		res := runCLI(t, nil, append([]string{"sync", "--catch-up", "--source", source, "--target", target, "--include-tables", "rls.public.t"}, args...)...)
		if res.Code != 0 {
			t.Fatalf("sync --catch-up %s: exit %d\n%s", step, res.Code, res.Stderr)
		}
		assertSameTables(t, src, dst, "rls", "t")
	}
	state := func() string {
		return dst.QueryString("rls", `SELECT relforcerowsecurity || ' ' || (SELECT count(*) FROM seren_replicator.held WHERE kind = 'row security')
			FROM pg_class WHERE oid = 'public.t'::regclass`)
	}
	catchUp("with --ddl-capture", "--ddl-capture")
	for _, stmt := range []string{
		`CREATE POLICY mine ON t USING (who = current_user)`,
		`ALTER TABLE t ENABLE ROW LEVEL SECURITY`,
		`ALTER TABLE t FORCE ROW LEVEL SECURITY`,
		`INSERT INTO t VALUES (1, 'someone'), (2, 'else')`,
		`UPDATE t SET who = 'x2' WHERE id = 0`,
	} {
		src.Exec("rls", stmt)
	}
	catchUp("after FORCE ROW LEVEL SECURITY on the source")
	if got := state(); got != "false 1" {
		t.Errorf("target's FORCE and holds after FORCE on the source: %q, want held (false 1)", got)
	}

	src.Exec("rls", `ALTER TABLE t NO FORCE ROW LEVEL SECURITY`)
	src.Exec("rls", `INSERT INTO t VALUES (3, 'more')`)
	catchUp("after NO FORCE on the source")
	if got := state(); got != "false 0" {
		t.Errorf("target's FORCE and holds after NO FORCE on the source: %q, want not forced and not held (false 0)", got)
	}

	src.Exec("rls", `ALTER TABLE t FORCE ROW LEVEL SECURITY`)
	src.Exec("rls", `ALTER TABLE t ADD COLUMN note text`)
	src.Exec("rls", `UPDATE t SET note = 'n' WHERE id = 3`)
	catchUp("after FORCE again and a column added")
	if got := state(); got != "false 1" {
		t.Errorf("target's FORCE and holds after FORCE again: %q, want held (false 1)", got)
	}
	res := runCLI(t, nil, "cleanup", "--yes", "--source", source, "--target", dst.URL("postgres", "", "rls"))
	if res.Code != 0 {
		t.Fatalf("cleanup: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if got := dst.QueryString("rls", `SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.t'::regclass`); got != "true" {
		t.Errorf("target table forced after cleanup: %s, want true as on the source", got)
	}
}
