package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// relationPathLines are what the Relation-message path logs when it
// follows a schema change itself; after a captured statement it must find
// nothing left to do.
var relationPathLines = []string{"added column the source added", "column renamed on the source", "dropped columns the source dropped",
	"column type changed on the source", "created a type the source created", "copying the table again"}

// ddlTarget prepares db for a test of --ddl-capture in one apply mode and
// returns the target URL: replica mode as the target's superuser, ordered
// mode as a role that owns the tables and types it changes.
func ddlTarget(t *testing.T, dst *pgtest.Cluster, mode, db string, owned ...string) string {
	t.Helper()
	if mode == "replica" {
		return dst.URL("postgres", "", db)
	}
	dst.CreateRole("applier", "applier-pw")
	sql := `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier; GRANT CREATE ON DATABASE ` + db + ` TO applier;
		GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier;`
	for _, o := range owned {
		sql += " ALTER " + o + " OWNER TO applier;"
	}
	dst.Exec(db, sql)
	return dst.URL("applier", "applier-pw", db)
}

// With --ddl-capture, the changes the stream cannot carry arrive, in both
// apply modes: an enum label renamed, a column added (with a default and
// NOT NULL) and a column renamed with no later write to the table, a
// generated column dropped and added again with another expression, then
// renamed and its old name given to a plain column, an index; a label
// added and used at once. A statement on a table outside
// the selection is skipped with a log line. After the captured statements
// the Relation messages find nothing left to do. validate reports the
// capture, cleanup removes it.
func TestDDLCaptureCarriesWhatTheStreamCannot(t *testing.T) {
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			src, dst := pgtestPair(t)
			prepareStreaming(t, src, dst, "cap", `CREATE TYPE mood AS ENUM ('sad', 'ok');
				CREATE TABLE t (id int PRIMARY KEY, a int, m mood, g int GENERATED ALWAYS AS (a * 2) STORED);
				CREATE TABLE other (id int PRIMARY KEY);`, "public.t")
			target := ddlTarget(t, dst, mode, "cap", "TABLE t", "TYPE mood")
			source := src.URL("postgres", "", "cap")
			src.Exec("cap", `INSERT INTO t (id, a, m) SELECT g, g, 'ok' FROM generate_series(1, 20) g`)
			res := runCLI(t, nil, "sync", "--catch-up", "--ddl-capture", "--source", source, "--target", target, "--include-tables", "cap.public.t")
			if res.Code != 0 {
				t.Fatalf("sync --catch-up --ddl-capture: exit %d\n%s", res.Code, res.Stderr)
			}
			if !strings.Contains(res.Stderr, "DDL capture installed on the source") {
				t.Errorf("sync did not say it installed the capture:\n%s", res.Stderr)
			}
			// Each statement sent alone, as a migration tool sends them.
			for _, stmt := range []string{
				`ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'`,
				`ALTER TABLE t ADD COLUMN d int NOT NULL DEFAULT 7`,
				`ALTER TABLE t RENAME COLUMN a TO a2`,
				`ALTER TABLE t DROP COLUMN g`,
				`ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (a2 * 3) STORED`,
				`ALTER TABLE t RENAME COLUMN g TO g_old`,
				`ALTER TABLE t RENAME COLUMN a2 TO g`,
				`CREATE INDEX t_d ON t (d)`,
				`ALTER TABLE other ADD COLUMN x int`,
				`ALTER TYPE mood ADD VALUE 'great'`,
				`INSERT INTO t (id, g, m) VALUES (100, 1, 'great')`,
				`ALTER TABLE t ALTER COLUMN d SET DEFAULT 8`,
			} {
				src.Exec("cap", stmt)
			}
			res = runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target, "--include-tables", "cap.public.t")
			if res.Code != 0 {
				t.Fatalf("sync --catch-up: exit %d\n%s", res.Code, res.Stderr)
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("sync log:\n%s", res.Stderr)
				}
			})
			if n := strings.Count(res.Stderr, "applied a captured DDL statement"); n != 10 {
				t.Errorf("%d captured statements applied, want 10:\n%s", n, res.Stderr)
			}
			if !strings.Contains(res.Stderr, "captured DDL statement skipped: it touches objects outside the migration") ||
				!strings.Contains(res.Stderr, "public.other") {
				t.Errorf("no log line for the statement outside the selection:\n%s", res.Stderr)
			}
			for _, line := range relationPathLines {
				if strings.Contains(res.Stderr, line) {
					t.Errorf("the Relation messages still had something to do after the captured statements (%q):\n%s", line, res.Stderr)
				}
			}
			assertSameTables(t, src, dst, "cap", "t")
			assertSameColumns(t, src, dst, "cap", "t")
			const labels = `SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = 'mood'::regtype`
			if s, d := src.QueryString("cap", labels), dst.QueryString("cap", labels); s != d {
				t.Errorf("enum labels: source %s, target %s", s, d)
			}
			if got := dst.QueryString("cap", `SELECT count(*) FROM pg_indexes WHERE indexname = 't_d'`); got != "1" {
				t.Errorf("index t_d on the target: %s", got)
			}
			if got := dst.QueryString("cap", `SELECT count(*) FROM pg_attribute WHERE attrelid = 'other'::regclass AND attname = 'x'`); got != "0" {
				t.Errorf("the statement on a table outside the selection reached the target")
			}

			if mode == "replica" {
				checkValidateDDLCapture(t, src, dst)
			}
			res = runCLI(t, nil, "cleanup", "--yes", "--source", source, "--target", dst.URL("postgres", "", "cap"))
			if res.Code != 0 || !strings.Contains(res.Stdout, "dropped DDL capture") {
				t.Fatalf("cleanup: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
			}
			if got := src.QueryString("cap", `SELECT (SELECT count(*) FROM pg_event_trigger) || ' ' || (to_regclass('seren_replicator.ddl_log') IS NULL)
				|| ' ' || (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'seren_replicator')`); got != "0 true 0" {
				t.Errorf("left on the source after cleanup (event triggers, table gone, functions): %s", got)
			}
		})
	}
}

// checkValidateDDLCapture runs validate as the source's superuser (the
// capture installed) and as a role that may not create event triggers,
// with and without --ddl-capture.
func checkValidateDDLCapture(t *testing.T, src, dst *pgtest.Cluster) {
	t.Helper()
	line := func(res Result) (status, detail string) {
		var report struct {
			Checks []struct{ Name, Status, Detail string }
		}
		if err := json.Unmarshal([]byte(res.Stdout), &report); err != nil {
			t.Fatalf("validate --json: %v\n%s\n%s", err, res.Stdout, res.Stderr)
		}
		for _, c := range report.Checks {
			if c.Name == "DDL capture" {
				return c.Status, c.Detail
			}
		}
		t.Fatalf("validate printed no DDL capture check:\n%s", res.Stdout)
		return "", ""
	}
	target := dst.URL("postgres", "", "cap")
	status, detail := line(runCLI(t, nil, "validate", "--json", "--source", src.URL("postgres", "", "cap"), "--target", target))
	if status != "pass" || !strings.Contains(detail, "installed (by postgres)") {
		t.Errorf("validate as the superuser: %s: %s", status, detail)
	}
	src.CreateRole("plain", "plain-pw", "REPLICATION")
	src.Exec("cap", `GRANT SELECT ON ALL TABLES IN SCHEMA public TO plain`)
	plain := src.URL("plain", "plain-pw", "cap")
	status, detail = line(runCLI(t, nil, "validate", "--json", "--source", plain, "--target", target))
	if status != "warn" && status != "pass" || !strings.Contains(detail, "installed") {
		// The capture is installed: the role need not create it.
		t.Errorf("validate as a plain role, capture installed: %s: %s", status, detail)
	}
	src.Exec("cap", `DROP EVENT TRIGGER seren_replicator_ddl_command_end; DROP EVENT TRIGGER seren_replicator_sql_drop`)
	status, detail = line(runCLI(t, nil, "validate", "--json", "--source", plain, "--target", target))
	if status != "warn" || !strings.Contains(detail, "not recording") {
		t.Errorf("validate, triggers dropped: %s: %s", status, detail)
	}
	src.Exec("cap", `ALTER PUBLICATION seren_cap_pub DROP TABLE seren_replicator.ddl_log`)
	status, detail = line(runCLI(t, nil, "validate", "--json", "--source", plain, "--target", target))
	if status != "pass" || !strings.Contains(detail, "not available") || !strings.Contains(detail, "may not create event triggers") {
		t.Errorf("validate as a plain role: %s: %s", status, detail)
	}
	status, detail = line(runCLI(t, nil, "validate", "--json", "--ddl-capture", "--source", plain, "--target", target))
	if status != "fail" {
		t.Errorf("validate --ddl-capture as a plain role: %s: %s", status, detail)
	}
	status, detail = line(runCLI(t, nil, "validate", "--json", "--ddl-capture", "--source", src.URL("postgres", "", "cap"), "--target", target))
	if status != "pass" || !strings.Contains(detail, "available (role postgres is a superuser)") {
		t.Errorf("validate --ddl-capture as the superuser: %s: %s", status, detail)
	}
	// What the capture left on the source is a whole capture again for
	// cleanup to remove.
	if res := runCLI(t, nil, "sync", "--catch-up", "--ddl-capture", "--source", src.URL("postgres", "", "cap"), "--target", target, "--include-tables", "cap.public.t"); res.Code != 0 {
		t.Fatalf("sync --ddl-capture: exit %d\n%s", res.Code, res.Stderr)
	}
}

// Exactly once: sync with --ddl-capture killed with SIGKILL at random
// moments while the source adds columns (without IF NOT EXISTS, so a
// statement applied twice would be refused and said) and writes rows,
// restarted each time; in both apply modes. Each captured statement runs
// in the target transaction that moves the checkpoint past it: the target
// ends with the source's columns and rows, and no captured statement was
// ever refused.
func TestDDLCaptureExactlyOnceUnderKill9(t *testing.T) {
	longTest(t)
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			src, dst := pgtestPair(t)
			prepareStreaming(t, src, dst, "k9", `CREATE TABLE t (id int PRIMARY KEY, v int);`, "public.t")
			target := ddlTarget(t, dst, mode, "k9", "TABLE t")
			source := src.URL("postgres", "", "k9")
			args := []string{"sync", "--ddl-capture", "--source", source, "--target", target, "--include-tables", "k9.public.t", "--max-retry-delay", "200ms"}
			src.Exec("k9", `INSERT INTO t SELECT g, 0 FROM generate_series(1, 200) g`)
			if res := runCLI(t, nil, append(args, "--catch-up")...); res.Code != 0 {
				t.Fatalf("sync --catch-up --ddl-capture: exit %d\n%s", res.Code, res.Stderr)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var statements atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				conn := src.Connect("k9")
				for i := 0; ctx.Err() == nil && i < 400; i++ {
					stmts := []string{fmt.Sprintf(`ALTER TABLE t ADD COLUMN c%d int DEFAULT %d`, i, i),
						fmt.Sprintf(`UPDATE t SET v = v + 1, c%d = id WHERE id %% 7 = %d`, i, i%7),
						fmt.Sprintf(`INSERT INTO t (id, v) VALUES (%d, %d)`, 1000+i, i)}
					if i%5 == 4 {
						stmts = append(stmts, fmt.Sprintf(`ALTER TABLE t RENAME COLUMN c%d TO r%d`, i-1, i-1), fmt.Sprintf(`ALTER TABLE t DROP COLUMN c%d`, i-2))
					}
					for _, stmt := range stmts {
						if _, err := conn.Exec(ctx, stmt); err != nil {
							if ctx.Err() == nil {
								t.Errorf("source: %s: %v", stmt, err)
							}
							return
						}
					}
					statements.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
			}()
			rng := rand.New(rand.NewPCG(7, 7))
			var logs []string
			for i := 0; i < 10; i++ {
				cmd := startSync(t, nil, args...)
				time.Sleep(time.Duration(700+rng.IntN(1500)) * time.Millisecond)
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				cmd.Wait()
				logs = append(logs, syncLog(cmd))
			}
			cancel()
			<-done
			res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target, "--include-tables", "k9.public.t")
			logs = append(logs, res.Stderr)
			all := strings.Join(logs, "\n")
			if res.Code != 0 {
				t.Fatalf("catch-up: exit %d\n%s", res.Code, res.Stderr)
			}
			applied := strings.Count(all, "applied a captured DDL statement")
			t.Logf("%d rounds of DDL on the source; %d captured statements applied over the runs", statements.Load(), applied)
			for _, line := range append([]string{"captured DDL statement not applied", "not captured whole", "could not be read", "skipped"}, relationPathLines...) {
				if strings.Contains(all, line) {
					t.Errorf("a captured statement was refused (applied twice?) or left to the Relation messages: %q in the logs:\n%s", line, reviewTail(all, 30))
				}
			}
			if applied == 0 {
				t.Errorf("no captured statement applied:\n%s", reviewTail(all, 40))
			}
			assertSameTables(t, src, dst, "k9", "t")
			assertSameColumns(t, src, dst, "k9", "t")
		})
	}
}

// What the capture cannot apply safely falls back to the Relation
// messages, with a log line each, and the target still ends like the
// source: a query string of several statements, DDL run inside a DO
// block, a column added with a default whose value depends on the moment
// (now()), a type change whose USING expression is volatile. CREATE INDEX
// CONCURRENTLY is left to the index comparison, DROP INDEX CONCURRENTLY is
// applied as a plain drop, a table rename is followed with its records,
// a function and a trigger made on the source reach the target (a
// function belonging to the role that made it where the target role may
// act as it), and a type renamed on the source is used by the rows written
// after.
func TestDDLCaptureFallsBackWhereUnsafe(t *testing.T) {
	longTest(t)
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			src, dst := pgtestPair(t)
			prepareStreaming(t, src, dst, "fb", `CREATE TYPE kind AS ENUM ('a', 'b');
				CREATE TABLE t (id int PRIMARY KEY, b int, c text, k kind, n int);
				CREATE INDEX t_c ON t (c);`, "public.t")
			target := ddlTarget(t, dst, mode, "fb", "TABLE t", "TYPE kind")
			source := src.URL("postgres", "", "fb")
			sel := []string{"--include-tables", "fb.public.*"}
			src.Exec("fb", `INSERT INTO t SELECT g, g, 'c' || g, 'a', g FROM generate_series(1, 50) g`)
			// A function made by another role than the migration's: on the
			// target it belongs to that role too, where the target role may
			// act as it (a superuser), else to the target role.
			src.CreateRole("app", "app-pw")
			dst.CreateRole("app", "app-pw")
			src.Exec("fb", `GRANT CREATE ON SCHEMA public TO app`)
			dst.Exec("fb", `GRANT CREATE ON SCHEMA public TO app`)
			if res := runCLI(t, nil, append([]string{"sync", "--catch-up", "--ddl-capture", "--source", source, "--target", target}, sel...)...); res.Code != 0 {
				t.Fatalf("sync --ddl-capture: exit %d\n%s", res.Code, res.Stderr)
			}
			for _, stmt := range []string{
				`ALTER TABLE t ADD COLUMN x int; UPDATE t SET x = id WHERE id < 5`,
				`DO $$ BEGIN EXECUTE 'ALTER TABLE t RENAME COLUMN b TO b2'; END $$`,
				`UPDATE t SET b2 = -b2 WHERE id = 1`,
				`ALTER TABLE t ADD COLUMN at timestamptz DEFAULT now()`,
				`UPDATE t SET c = 'w' WHERE id = 2`,
				`ALTER TABLE t ALTER COLUMN n TYPE bigint USING n + (random() * 0)::int`,
				`UPDATE t SET c = 'w2' WHERE id = 3`,
				`CREATE INDEX CONCURRENTLY t_n ON t (n)`,
				`DROP INDEX CONCURRENTLY t_c`,
				`CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN NEW.c := 'stamped'; RETURN NEW; END $f$`,
				`CREATE TRIGGER t_stamp BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION stamp()`,
				`INSERT INTO t (id, b2, c, k) VALUES (60, 1, 'x', 'b')`,
				`ALTER TYPE kind RENAME TO sort`,
				`ALTER TABLE t RENAME TO u`,
				`UPDATE u SET k = 'b' WHERE id < 10`,
				`INSERT INTO u (id, b2, k) VALUES (61, 2, 'a')`,
			} {
				src.Exec("fb", stmt)
			}
			app, err := pgx.Connect(context.Background(), src.URL("app", "app-pw", "fb"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := app.Exec(context.Background(), `CREATE FUNCTION app_f() RETURNS int LANGUAGE sql AS 'SELECT 1'`); err != nil {
				t.Fatal(err)
			}
			app.Close(context.Background())
			res := runCLIContext(t, context.Background(), 90*time.Second, nil, append([]string{"sync", "--catch-up", "--source", source, "--target", target}, sel...)...)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("sync log:\n%s", res.Stderr)
				}
			})
			if res.Code != 0 {
				t.Fatalf("sync --catch-up: exit %d\n%s", res.Code, res.Stderr)
			}
			for _, want := range []string{
				"came in a query string of 2 statements",
				"ran inside another statement (a DO block",
				"the rows that existed would read",
				"not immutable in its USING expression (random)",
				"left to the index comparison",
			} {
				if !strings.Contains(res.Stderr, want) {
					t.Errorf("no log line %q", want)
				}
			}
			// A catch-up ends with the index comparison.
			assertSameTables(t, src, dst, "fb", "u")
			assertSameColumns(t, src, dst, "fb", "u")
			const indexes = `SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'u'`
			if s, d := src.QueryString("fb", indexes), dst.QueryString("fb", indexes); s != d {
				t.Errorf("indexes: source %s, target %s", s, d)
			}
			if got := dst.QueryString("fb", `SELECT count(*) FROM pg_trigger WHERE tgname = 't_stamp' AND tgrelid = 'u'::regclass`); got != "1" {
				t.Errorf("trigger t_stamp on the target: %s", got)
			}
			// The rename is recorded (the type change with random() had the
			// table copied again, under its name then).
			if got := dst.QueryString("fb", `SELECT string_agg(table_name, ',' ORDER BY table_name) FROM seren_replicator.tables`); got != "u" {
				t.Errorf("tables recorded on the target: %s", got)
			}
			if got := dst.QueryString("fb", `SELECT to_regtype('sort') IS NOT NULL AND to_regtype('kind') IS NULL`); got != "true" {
				t.Errorf("type kind not renamed to sort on the target")
			}
			want := "app"
			if mode == "ordered" {
				want = "applier"
			}
			if got := dst.QueryString("fb", `SELECT coalesce((SELECT proowner::regrole::text FROM pg_proc WHERE proname = 'app_f'), 'none')`); got != want {
				t.Errorf("app_f on the target belongs to %s, want %s", got, want)
			}
			// No event trigger came to the target with init's dump (none
			// here): the capture's objects stay on the source.
			if got := dst.QueryString("fb", `SELECT count(*) FROM pg_event_trigger`); got != "0" {
				t.Errorf("%s event triggers on the target", got)
			}
		})
	}
}

// init --ddl-capture installs the capture before the slot, leaves it out
// of the target's schema, and what the source changes after the copy
// reaches the target through sync; sync --ddl-capture=false removes it,
// and so does a later init without the flag (with --drop-existing), which
// no longer uses it.
func TestInitDDLCapture(t *testing.T) {
	longTest(t)
	src, dst := pgtestPair(t)
	src.Exec("postgres", "CREATE DATABASE ic")
	src.Exec("ic", `CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TABLE t (id int PRIMARY KEY, m mood); INSERT INTO t SELECT g, 'ok' FROM generate_series(1, 10) g`)
	if res := runCLI(t, nil, "init", "--yes", "--ddl-capture", "--source", src.DSN("ic"), "--target", dst.DSN("ic")); res.Code != 0 {
		t.Fatalf("init --ddl-capture: exit %d\n%s", res.Code, res.Stderr)
	}
	if got := dst.QueryString("ic", `SELECT count(*) FROM pg_event_trigger`); got != "0" {
		t.Errorf("%s event triggers on the target after init", got)
	}
	if got := dst.QueryString("ic", `SELECT to_regclass('seren_replicator.ddl_log') IS NULL`); got != "true" {
		t.Errorf("the capture table reached the target")
	}
	src.Exec("ic", `ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'`)
	src.Exec("ic", `ALTER TABLE t ADD COLUMN note text DEFAULT 'n'`)
	res := runCLI(t, nil, "sync", "--catch-up", "--source", src.DSN("ic"), "--target", dst.DSN("ic"))
	if res.Code != 0 {
		t.Fatalf("sync: exit %d\n%s", res.Code, res.Stderr)
	}
	assertSameTables(t, src, dst, "ic", "t")
	assertSameColumns(t, src, dst, "ic", "t")
	const left = `SELECT (SELECT count(*) FROM pg_event_trigger) || ' ' || (to_regclass('seren_replicator.ddl_log') IS NULL)`
	if res := runCLI(t, nil, "sync", "--catch-up", "--ddl-capture=false", "--source", src.DSN("ic"), "--target", dst.DSN("ic")); res.Code != 0 ||
		!strings.Contains(res.Stderr, "DDL capture removed from the source") {
		t.Fatalf("sync --ddl-capture=false: exit %d\n%s", res.Code, res.Stderr)
	}
	if got := src.QueryString("ic", left); got != "0 true" {
		t.Errorf("sync --ddl-capture=false left the capture: %s", got)
	}
	if res := runCLI(t, nil, "sync", "--catch-up", "--ddl-capture", "--source", src.DSN("ic"), "--target", dst.DSN("ic")); res.Code != 0 {
		t.Fatalf("sync --ddl-capture: exit %d\n%s", res.Code, res.Stderr)
	}
	if res := runCLI(t, nil, "init", "--yes", "--drop-existing", "--source", src.DSN("ic"), "--target", dst.DSN("ic")); res.Code != 0 {
		t.Fatalf("init --drop-existing: exit %d\n%s", res.Code, res.Stderr)
	}
	if got := src.QueryString("ic", left); got != "0 true" {
		t.Errorf("init without --ddl-capture left the capture nobody uses: %s", got)
	}
}

// A partition created on the source for a partitioned table the migration
// carries: its captured CREATE TABLE … PARTITION OF makes it on the
// target, in order, and its rows stream into it.
func TestDDLCaptureNewPartition(t *testing.T) {
	longTest(t)
	src, dst := pgtestPair(t)
	src.Exec("postgres", "CREATE DATABASE np")
	src.Exec("np", `CREATE TABLE p (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
		CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100);
		INSERT INTO p SELECT g, 'a' FROM generate_series(1, 50) g`)
	source, target := src.DSN("np"), dst.DSN("np")
	if res := runCLI(t, nil, "init", "--yes", "--ddl-capture", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("init --ddl-capture: exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("np", `CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200)`)
	src.Exec("np", `INSERT INTO p SELECT g, 'b' FROM generate_series(90, 150) g ON CONFLICT (id) DO UPDATE SET v = 'c'`)
	res := runCLIContext(t, context.Background(), 60*time.Second, nil, "sync", "--catch-up", "--source", source, "--target", target)
	if res.Code != 0 {
		t.Fatalf("sync --catch-up: exit %d\n%s", res.Code, res.Stderr)
	}
	assertSameTables(t, src, dst, "np", "p", "p2")
}
