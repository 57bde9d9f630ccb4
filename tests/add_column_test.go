package tests

import (
	"strings"
	"testing"
)

// A column the source adds reaches the target as the source has it: the rows
// that existed read the value the source gave them (a constant default, even
// one changed or dropped since; NULL without one), and the column carries the
// source's current default and NOT NULL. Where the source filled existing
// rows with values the target cannot recompute (a volatile default), sync
// stops saying so instead of leaving them NULL. In both apply modes.
func TestSyncAddedColumnsKeepTheirValues(t *testing.T) {
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			src, dst := pgtestPair(t)
			needPgDump(t, src)
			prepareStreaming(t, src, dst, "addcol", `CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TABLE t (id int PRIMARY KEY, a text);`, "public.t")
			target := dst.URL("postgres", "", "addcol")
			if mode == "ordered" {
				dst.CreateRole("applier", "applier-pw")
				dst.Exec("addcol", `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier;
					GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier; ALTER TABLE t OWNER TO applier;`)
				target = dst.URL("applier", "applier-pw", "addcol")
			}
			catchUpTo := func(extra ...string) Result {
				return runCLI(t, nil, append([]string{"sync", "--catch-up", "--source", src.URL("postgres", "", "addcol"), "--target", target}, extra...)...)
			}
			src.Exec("addcol", `INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g`)
			if res := catchUpTo(); res.Code != 0 {
				t.Fatalf("exit %d: %s", res.Code, res.Stderr)
			}
			src.Exec("addcol", `ALTER TABLE t ADD COLUMN d int NOT NULL DEFAULT 7;
				ALTER TABLE t ADD COLUMN e text DEFAULT 'first';
				ALTER TABLE t ALTER COLUMN e SET DEFAULT 'second';
				ALTER TABLE t ADD COLUMN f date DEFAULT '2024-02-29';
				ALTER TABLE t ALTER COLUMN f DROP DEFAULT;
				ALTER TABLE t ADD COLUMN g numeric(6,2);
				ALTER TABLE t ADD COLUMN arr int[] DEFAULT '{1,NULL,3}';
				ALTER TABLE t ADD COLUMN tags text[] NOT NULL DEFAULT ARRAY['a b', 'it''s', 'back\slash'];
				ALTER TABLE t ADD COLUMN m mood DEFAULT 'ok';
				INSERT INTO t (id, a) VALUES (101, 'y');
				UPDATE t SET a = 'z' WHERE id = 5;
				BEGIN;
				ALTER TABLE t ADD COLUMN filled int;
				UPDATE t SET filled = id * 2;
				ALTER TABLE t ALTER COLUMN filled SET NOT NULL;
				COMMIT;`)
			res := catchUpTo()
			if res.Code != 0 {
				t.Fatalf("exit %d: %s", res.Code, res.Stderr)
			}
			// The backfilled column is NOT NULL on the source; on the target it
			// could not be set when it was added (its rows were NULL until the
			// UPDATE arrived): sync sets it once the stream has passed them.
			if !strings.Contains(res.Stderr, "set on the target once the stream passes") || !strings.Contains(res.Stderr, `filled\" SET NOT NULL`) {
				t.Errorf("no line for the backfilled NOT NULL column:\n%s", res.Stderr)
			}
			assertSameTables(t, src, dst, "addcol", "t")
			columns := `SELECT string_agg(format('%s %s %s %s', a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
					coalesce(pg_get_expr(d.adbin, d.adrelid), '-')), '; ' ORDER BY a.attnum)
				FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
				WHERE a.attrelid = 't'::regclass AND a.attnum > 0 AND NOT a.attisdropped`
			if s, d := src.QueryString("addcol", columns), dst.QueryString("addcol", columns); s != d {
				t.Errorf("columns differ\nsource: %s\ntarget: %s", s, d)
			}
			// The target applies inserts without the column as the source did.
			dst.Exec("addcol", `BEGIN; INSERT INTO t (id, a, filled) VALUES (1000, 'probe', 0); ROLLBACK;`)

			// A default set after the column was added: the source no longer
			// records what the existing rows hold; the table is copied again.
			src.Exec("addcol", `ALTER TABLE t ADD COLUMN later int; ALTER TABLE t ALTER COLUMN later SET DEFAULT 5; INSERT INTO t (id, a, filled) VALUES (103, 'v', 1);`)
			res = catchUpTo()
			if res.Code != 0 || !strings.Contains(res.Stderr, "copying the table again") {
				t.Fatalf("default set after the column: exit %d, want the table copied again\n%s", res.Code, res.Stderr)
			}
			assertSameTables(t, src, dst, "addcol", "t")

			// A dropped column is dropped on the target too.
			src.Exec("addcol", `ALTER TABLE t DROP COLUMN g; UPDATE t SET a = 'dropped g' WHERE id = 7;`)
			if res := catchUpTo(); res.Code != 0 || !strings.Contains(res.Stderr, "dropped columns the source dropped") {
				t.Fatalf("drop column: exit %d\n%s", res.Code, res.Stderr)
			}
			assertSameTables(t, src, dst, "addcol", "t")

			// A volatile default gave each existing row its own value.
			src.Exec("addcol", `ALTER TABLE t ADD COLUMN at timestamptz DEFAULT clock_timestamp(); INSERT INTO t (id, a, filled) VALUES (102, 'w', 1);`)
			before := dst.QueryString("addcol", "SELECT count(*) FROM t")
			res = catchUpTo("--schema-changes", "stop")
			if res.Code != exitNeedsAction || !strings.Contains(res.Stderr, "column at") || !strings.Contains(res.Stderr, "ADD COLUMN") {
				t.Fatalf("volatile default: exit %d, want 4 explaining it\n%s", res.Code, res.Stderr)
			}
			if after := dst.QueryString("addcol", "SELECT count(*) FROM t"); after != before {
				t.Errorf("rows applied past the stop: %s, then %s", before, after)
			}
			// Otherwise the table is copied again, with the source's values.
			res = catchUpTo()
			if res.Code != 0 || !strings.Contains(res.Stderr, "copying the table again") {
				t.Fatalf("volatile default: exit %d, want the table copied again\n%s", res.Code, res.Stderr)
			}
			assertSameTables(t, src, dst, "addcol", "t")
		})
	}
}
