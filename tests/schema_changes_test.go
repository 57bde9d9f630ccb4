package tests

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// columnsSQL lists a table's columns as a row of text each: name, type,
// NOT NULL and default, in attribute number order.
const columnsSQL = `SELECT string_agg(format('%%s %%s %%s %%s', a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
		coalesce(pg_get_expr(d.adbin, d.adrelid), '-')), E'\n' ORDER BY a.attnum)
	FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	WHERE a.attrelid = '%s'::regclass AND a.attnum > 0 AND NOT a.attisdropped`

// Schema changes on a streaming table are followed while sync runs under a
// write workload, in both apply modes: renames (one that swaps two names,
// one whose old name a new column takes), a drop and an add in one
// statement, type changes, defaults and NOT NULL, and an enum and a domain
// created on the source after init. The target ends with the source's rows,
// and after cleanup with the source's definition of the table (pg_dump).
func TestSyncFollowsSchemaChanges(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			src, dst := pgtestPair(t)
			needPgDump(t, src)
			prepareStreaming(t, src, dst, "ddl", `CREATE TABLE t (id int PRIMARY KEY, a text, b int, c text DEFAULT 'x', n numeric(8,2), note text DEFAULT 'n');`, "public.t")
			target := dst.URL("postgres", "", "ddl")
			if mode == "ordered" {
				dst.CreateRole("applier", "applier-pw")
				dst.Exec("ddl", `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier;
					GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier; ALTER TABLE t OWNER TO applier;`)
				target = dst.URL("applier", "applier-pw", "ddl")
			}
			src.Exec("ddl", `INSERT INTO t SELECT g, 'a' || g, g, 'c' || g, g / 3.0, 'note' || g FROM generate_series(1, 500) g`)
			daemon := startSync(t, nil, "sync", "--source", src.URL("postgres", "", "ddl"), "--target", target, "--max-retry-delay", "500ms")
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("sync log:\n%s", syncLog(daemon))
				}
			})

			// The workload writes only columns no step changes.
			ctx, cancel := context.WithCancel(context.Background())
			var writes atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				conn := src.Connect("ddl")
				for id := 1000; ctx.Err() == nil; id++ {
					_, err := conn.Exec(ctx, `INSERT INTO t (id, a) VALUES ($1, 'w')`, id)
					if err == nil {
						_, err = conn.Exec(ctx, `UPDATE t SET a = a || '.' WHERE id = $1::int % 500 + 1`, id)
					}
					if err != nil {
						if ctx.Err() == nil {
							t.Errorf("workload: %v", err)
						}
						return
					}
					writes.Add(1)
				}
			}()
			steps := []string{
				`ALTER TABLE t RENAME COLUMN b TO b2; UPDATE t SET b2 = -b2 WHERE id % 10 = 0`,
				`BEGIN; ALTER TABLE t RENAME COLUMN c TO tmp; ALTER TABLE t RENAME COLUMN note TO c; ALTER TABLE t RENAME COLUMN tmp TO note; COMMIT;
				 UPDATE t SET c = c || '!' WHERE id % 7 = 0`,
				`ALTER TABLE t RENAME COLUMN b2 TO b3; ALTER TABLE t ADD COLUMN b2 int DEFAULT 42; UPDATE t SET b3 = b3 + 1 WHERE id % 5 = 0`,
				`ALTER TABLE t DROP COLUMN b3, ADD COLUMN e text; UPDATE t SET e = 'e' || id WHERE id % 3 = 0`,
				`ALTER TABLE t ALTER COLUMN n TYPE numeric(12,4); ALTER TABLE t ALTER COLUMN b2 TYPE bigint; UPDATE t SET n = n + 0.0001 WHERE id % 4 = 0`,
				`ALTER TABLE t ALTER COLUMN note SET DEFAULT 'y'; ALTER TABLE t ALTER COLUMN c DROP DEFAULT; ALTER TABLE t ALTER COLUMN e SET DEFAULT 'dflt';
				 UPDATE t SET e = 'filled' WHERE e IS NULL; ALTER TABLE t ALTER COLUMN e SET NOT NULL`,
				`ALTER TABLE t ALTER COLUMN note SET NOT NULL; ALTER TABLE t ALTER COLUMN note DROP NOT NULL; ALTER TABLE t ALTER COLUMN a SET NOT NULL`,
				`CREATE TYPE mood AS ENUM ('sad', 'ok', 'it''s fine'); CREATE DOMAIN posint AS int CHECK (VALUE > 0);
				 ALTER TABLE t ADD COLUMN m mood, ADD COLUMN p posint, ADD COLUMN ms mood[];
				 UPDATE t SET m = 'it''s fine', p = id, ms = '{sad,ok}' WHERE id % 3 = 0`,
				// A label the source adds sends no Relation message.
				`ALTER TYPE mood ADD VALUE 'great' AFTER 'ok'`,
				`UPDATE t SET m = 'great', ms = '{great}' WHERE id % 11 = 0`,
			}
			for _, step := range steps {
				time.Sleep(300 * time.Millisecond)
				src.Exec("ddl", step)
			}
			time.Sleep(500 * time.Millisecond)
			cancel()
			<-done
			dconn := dst.Connect("ddl")
			eventually(t, 60*time.Second, "the target to converge", func() bool {
				var got string
				if err := dconn.QueryRow(context.Background(), `SELECT coalesce(string_agg(x::text, E'\n' ORDER BY x::text), '') FROM t x`).Scan(&got); err != nil {
					return false // the table is being copied again
				}
				return got == tableContents(t, src, "ddl", "t")
			})
			if err := daemon.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := daemon.Wait(); err != nil {
				t.Fatalf("sync: %v", err)
			}
			assertSameTables(t, src, dst, "ddl", "t")
			if s, d := src.QueryString("ddl", fmt.Sprintf(columnsSQL, "t")), dst.QueryString("ddl", fmt.Sprintf(columnsSQL, "t")); s != d {
				t.Errorf("columns differ\nsource:\n%s\ntarget:\n%s", s, d)
			}
			cleanupAndCompareSchema(t, src, dst, "ddl", "public.t")
			// Which changes DDL followed and which tables were copied again
			// depends on how far behind sync was at each; the result may not.
			log := syncLog(daemon)
			for _, path := range []string{"column renamed on the source", "dropped columns the source dropped", "column type changed on the source", "created a type the source created", "SET NOT NULL", "copying the table again"} {
				t.Logf("%q: %d times", path, strings.Count(log, path))
			}
			t.Logf("%d workload transactions", writes.Load())
		})
	}
}

// A schema change that DDL cannot follow makes sync copy the table again at
// a new snapshot (the path of a table added to the migration), in both
// apply modes: a rename that the source's catalog can no longer tell from a
// drop and an add (the catalog changed again before sync read the change),
// a column added with a volatile default, and a type change whose USING
// expression the target's values do not take. Another table's foreign key
// to the table copied again is made again once the stream has passed the
// copy.
func TestSyncRecopiesWhatDDLCannotFollow(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			src, dst := pgtestPair(t)
			needPgDump(t, src)
			prepareStreaming(t, src, dst, "recopy", `CREATE TABLE parent (id int PRIMARY KEY, b int, c text);
				CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id) ON DELETE CASCADE);`, "public.parent", "public.child")
			target := dst.URL("postgres", "", "recopy")
			if mode == "ordered" {
				dst.CreateRole("applier", "applier-pw")
				dst.Exec("recopy", `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier;
					GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier;
					ALTER TABLE parent OWNER TO applier; ALTER TABLE child OWNER TO applier;`)
				target = dst.URL("applier", "applier-pw", "recopy")
			}
			catchUpTo := func() Result {
				t.Helper()
				res := runCLI(t, nil, "sync", "--catch-up", "--source", src.URL("postgres", "", "recopy"), "--target", target)
				if res.Code != 0 {
					t.Fatalf("exit %d: %s", res.Code, res.Stderr)
				}
				return res
			}
			src.Exec("recopy", `INSERT INTO parent SELECT g, g, 'c' || g FROM generate_series(1, 300) g;
				INSERT INTO child SELECT g, g FROM generate_series(1, 300) g`)
			catchUpTo()
			// before runs in a transaction of its own, ahead of sql.
			steps := []struct{ name, before, sql string }{
				{"rename read after a later change", "", `ALTER TABLE parent RENAME COLUMN b TO b2; UPDATE parent SET b2 = b2 + 1 WHERE id % 2 = 0;
					DELETE FROM parent WHERE id = 7; ALTER TABLE parent ADD COLUMN d int DEFAULT 3; UPDATE parent SET d = 4 WHERE id = 8`},
				{"volatile default", "", `ALTER TABLE parent ADD COLUMN at timestamptz DEFAULT clock_timestamp(); INSERT INTO parent (id, b2, c) VALUES (1000, 1, 'new');
					INSERT INTO child VALUES (1000, 1000)`},
				{"type change the target cannot cast", "", `ALTER TABLE parent ALTER COLUMN c TYPE int USING length(c); UPDATE parent SET c = c * 10 WHERE id % 3 = 0;
					DELETE FROM parent WHERE id = 9`},
				// pg_dump -t dumps the table without the types it uses.
				{"types created since init", "", `CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE DOMAIN posint AS int CHECK (VALUE > 0);
					ALTER TABLE parent ADD COLUMN at2 timestamptz DEFAULT clock_timestamp(), ADD COLUMN m mood, ADD COLUMN p posint, ADD COLUMN ms mood[];
					UPDATE parent SET m = 'ok', p = id, ms = '{sad,ok}' WHERE id % 3 = 0`},
				{"enum labels added since", `ALTER TYPE mood ADD VALUE 'great' BEFORE 'ok'`, `ALTER TABLE parent ADD COLUMN at3 timestamptz DEFAULT clock_timestamp();
					UPDATE parent SET m = 'great', ms = '{great}' WHERE id % 5 = 0`},
			}
			for _, step := range steps {
				if step.before != "" {
					src.Exec("recopy", step.before)
				}
				src.Exec("recopy", step.sql)
				res := catchUpTo()
				if !strings.Contains(res.Stderr, "copying the table again") || !strings.Contains(res.Stderr, "table joined the migration") {
					t.Errorf("%s: the table was not copied again:\n%s", step.name, res.Stderr)
				}
				assertSameTables(t, src, dst, "recopy", "parent", "child")
				if s, d := src.QueryString("recopy", fmt.Sprintf(columnsSQL, "parent")), dst.QueryString("recopy", fmt.Sprintf(columnsSQL, "parent")); s != d {
					t.Errorf("%s: columns differ\nsource:\n%s\ntarget:\n%s", step.name, s, d)
				}
			}
			// The child's key to the parent was made again; it cascades.
			if got := dst.QueryString("recopy", `SELECT count(*) FROM pg_constraint WHERE conrelid = 'child'::regclass AND contype = 'f'`); got != "1" {
				t.Fatalf("child has %s foreign keys on the target, want 1", got)
			}
			src.Exec("recopy", `DELETE FROM parent WHERE id = 10; INSERT INTO child VALUES (2000, 11)`)
			catchUpTo()
			assertSameTables(t, src, dst, "recopy", "parent", "child")
			if got := src.QueryString("recopy", `SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '%\_add'`); got != "0" {
				t.Errorf("%s temporary slots left on the source", got)
			}
			cleanupAndCompareSchema(t, src, dst, "recopy", "public.parent", "public.child")
		})
	}
}

// objectsSQL lists a database's indexes and constraints on user tables
// (without PostgreSQL 18's NOT NULL constraints, which older targets keep
// as column properties).
const objectsSQL = `SELECT string_agg(x, E'\n' ORDER BY x) FROM (
	SELECT 'index ' || indexname || ': ' || indexdef AS x FROM pg_indexes WHERE schemaname = 'public'
	UNION ALL
	SELECT format('constraint %s on %s: %s%s', conname, conrelid::regclass, pg_get_constraintdef(oid), CASE WHEN convalidated THEN '' ELSE ' (not validated)' END)
	FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND contype <> 'n') o`

// Indexes and constraints the source makes after the copy reach the target
// by definition, in both apply modes: a plain index, a unique constraint
// added once the duplicates were gone (made on the target only after the
// stream has passed that point, when its rows have no duplicates either), a
// check constraint, a foreign key, and an index renamed on the source.
func TestSyncFollowsIndexesAndConstraints(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			src, dst := pgtestPair(t)
			prepareStreaming(t, src, dst, "objs", `CREATE TABLE u (id int PRIMARY KEY); CREATE TABLE t (id int PRIMARY KEY, a int, b text, u_id int);
				CREATE INDEX t_ab_idx ON t (a, b);`, "public.t", "public.u")
			target := dst.URL("postgres", "", "objs")
			if mode == "ordered" {
				dst.CreateRole("applier", "applier-pw")
				dst.Exec("objs", `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier;
					GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier; ALTER TABLE t OWNER TO applier; ALTER TABLE u OWNER TO applier;`)
				target = dst.URL("applier", "applier-pw", "objs")
			}
			catchUpTo := func() Result {
				t.Helper()
				res := runCLI(t, nil, "sync", "--catch-up", "--source", src.URL("postgres", "", "objs"), "--target", target)
				if res.Code != 0 {
					t.Fatalf("exit %d: %s", res.Code, res.Stderr)
				}
				return res
			}
			src.Exec("objs", `INSERT INTO u SELECT g FROM generate_series(1, 10) g;
				INSERT INTO t SELECT g, g, 'b' || g, g % 10 + 1 FROM generate_series(1, 200) g; INSERT INTO t VALUES (201, 1, 'b1', 1)`)
			catchUpTo()
			src.Exec("objs", `DELETE FROM t WHERE id = 201;
				ALTER TABLE t ADD CONSTRAINT t_b_key UNIQUE (b);
				CREATE INDEX t_a_idx ON t (a) WHERE a > 100;
				ALTER TABLE t ADD CONSTRAINT t_a_positive CHECK (a > 0);
				ALTER TABLE t ADD CONSTRAINT t_u_fkey FOREIGN KEY (u_id) REFERENCES u (id);
				ALTER INDEX t_ab_idx RENAME TO t_ab_renamed;
				INSERT INTO t VALUES (300, 300, 'b300', 2)`)
			res := catchUpTo()
			if strings.Contains(res.Stderr, "could not make") {
				t.Errorf("an object failed:\n%s", res.Stderr)
			}
			if s, d := src.QueryString("objs", objectsSQL), dst.QueryString("objs", objectsSQL); s != d {
				t.Errorf("indexes and constraints differ\nsource:\n%s\ntarget:\n%s", s, d)
			}
			src.Exec("objs", `INSERT INTO t VALUES (301, 301, 'b301', 3); UPDATE t SET b = 'x' || b WHERE id % 7 = 0`)
			catchUpTo()
			assertSameTables(t, src, dst, "objs", "t", "u")
			cleanupAndCompareSchema(t, src, dst, "objs", "public.t", "public.u")
		})
	}
}
