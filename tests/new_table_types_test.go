package tests

import (
	"fmt"
	"strings"
	"testing"
)

// A table created on the source after init joins the migration with the
// types its columns use, in both apply modes: an enum, a domain and an
// array of the enum that the target lacks are made first (pg_dump -t leaves
// them out). A type the tool cannot make (an extension's) stops sync with
// exit 4 and the statement to run; once run, the table joins.
func TestSyncNewTableBringsItsTypes(t *testing.T) {
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			src, dst := pgtestPair(t)
			needPgDump(t, src)
			prepareStreaming(t, src, dst, "types", `CREATE TABLE base (id int PRIMARY KEY);`, "public.base")
			target := dst.URL("postgres", "", "types")
			if mode == "ordered" {
				dst.CreateRole("applier", "applier-pw")
				dst.Exec("types", `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier; GRANT CREATE ON DATABASE types TO applier;
					GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier; ALTER TABLE base OWNER TO applier;`)
				target = fmt.Sprintf("postgres://applier:applier-pw@127.0.0.1:%d/types?sslmode=disable", dst.Port)
			}
			catchUpTo := func(want int) Result {
				t.Helper()
				res := runCLI(t, nil, "sync", "--catch-up", "--source", src.URL("postgres", "", "types"), "--target", target)
				if res.Code != want {
					t.Fatalf("sync --catch-up: exit %d, want %d\n%s", res.Code, want, res.Stderr)
				}
				return res
			}
			src.Exec("types", `CREATE TYPE color AS ENUM ('red', 'it''s green'); CREATE DOMAIN pos AS int CHECK (VALUE > 0);
				CREATE TABLE paint (id int PRIMARY KEY, c color, p pos, cs color[]);
				INSERT INTO paint VALUES (1, 'red', 3, '{"it''s green"}'), (2, NULL, NULL, NULL)`)
			catchUpTo(0)
			assertSameTables(t, src, dst, "types", "paint")

			src.Exec("types", `CREATE EXTENSION citext; CREATE TABLE names (id int PRIMARY KEY, n citext); INSERT INTO names VALUES (1, 'Ann')`)
			res := catchUpTo(exitNeedsAction)
			if !strings.Contains(res.Stderr, `"public"."citext" (of extension citext)`) || !strings.Contains(res.Stderr, `run on the target CREATE EXTENSION "citext"`) {
				t.Errorf("the refusal does not name the type and what to do:\n%s", res.Stderr)
			}
			dst.Exec("types", `CREATE EXTENSION citext`)
			src.Exec("types", `INSERT INTO names VALUES (2, 'Bob'); UPDATE paint SET c = 'it''s green' WHERE id = 2`)
			catchUpTo(0)
			assertSameTables(t, src, dst, "types", "paint", "names")
			cleanupAndCompareSchema(t, src, dst, "types", "public.paint", "public.names")
		})
	}
}
