package tests

import (
	"strings"
	"testing"
)

// Changes to one key within a batch collapse into their net effect; every
// combination must end as on the source, and tables whose constraints make
// order visible must not be merged.
const mergeSchema = `
CREATE TABLE kv (id int PRIMARY KEY, v text, big text);
ALTER TABLE kv ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE uniq (id int PRIMARY KEY, code text UNIQUE);
CREATE TABLE comp (a int, b text, v int, PRIMARY KEY (a, b));
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent ON DELETE CASCADE);
CREATE TABLE logonly (at timestamptz DEFAULT now(), msg text);
`

var mergeTables = []string{"kv", "uniq", "comp", "parent", "child", "logonly"}

const mergeWorkload = `
INSERT INTO kv SELECT g, 'v' || g, repeat(md5(g::text), 500) FROM generate_series(1, 50) g;
INSERT INTO uniq VALUES (1, 'a'), (2, 'b');
BEGIN;
  UPDATE kv SET v = 'u1' WHERE id = 1;                  -- update, update
  UPDATE kv SET v = 'u2' WHERE id = 1;
  UPDATE kv SET v = 'gone' WHERE id = 2; DELETE FROM kv WHERE id = 2;   -- update, delete
  DELETE FROM kv WHERE id = 3; INSERT INTO kv VALUES (3, 'again', 'small');  -- delete, insert
  INSERT INTO kv VALUES (100, 'new', repeat('z', 9000)); UPDATE kv SET v = 'newer' WHERE id = 100;  -- insert, update keeps TOAST
  INSERT INTO kv VALUES (101, 'brief', NULL); DELETE FROM kv WHERE id = 101;   -- insert, delete
  INSERT INTO kv VALUES (102, 'lock', NULL); DELETE FROM kv WHERE id = 102; INSERT INTO kv VALUES (102, 'again', NULL); -- insert, delete, insert
  DELETE FROM kv WHERE id = 7; INSERT INTO kv VALUES (7, 'r', NULL); DELETE FROM kv WHERE id = 7; INSERT INTO kv VALUES (7, 'r2', 'x'); -- delete, insert, delete, insert
  DELETE FROM kv WHERE id = 4; INSERT INTO kv VALUES (4, 'x', NULL); UPDATE kv SET big = 'y' WHERE id = 4; -- replace, update
  UPDATE kv SET v = NULL WHERE id = 5; UPDATE kv SET big = NULL WHERE id = 5;  -- updates of different columns
  UPDATE kv SET id = 1000 WHERE id = 6; UPDATE kv SET v = 'moved' WHERE id = 1000;  -- key change is a barrier
  UPDATE uniq SET code = 'tmp' WHERE id = 1; UPDATE uniq SET code = 'a' WHERE id = 2; UPDATE uniq SET code = 'b' WHERE id = 1; -- swap
  INSERT INTO comp VALUES (1, 'x', 1), (1, 'y', 2), (2, 'x', 3); UPDATE comp SET v = v * 10 WHERE a = 1; DELETE FROM comp WHERE b = 'y';
  INSERT INTO parent SELECT generate_series(1, 10); INSERT INTO child SELECT g, g FROM generate_series(1, 10) g;
  DELETE FROM parent WHERE id <= 3;                      -- cascades to child on the source
  INSERT INTO logonly (msg) SELECT 'm' || g FROM generate_series(1, 30) g;
COMMIT;
UPDATE kv SET v = 'later' WHERE id BETWEEN 10 AND 20;
TRUNCATE logonly;
INSERT INTO logonly (msg) VALUES ('after truncate');
`

func TestSyncMergedBatchesMatchSource(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "m", mergeSchema, "public.kv", "public.uniq", "public.comp", "public.parent", "public.child", "public.logonly")
	src.Exec("m", mergeWorkload)
	catchUp(t, src, dst, "m")
	assertSameTables(t, src, dst, "m", mergeTables...)
}

// A target role that may not set session_replication_role (a plain owner of
// the tables, as after init on a managed service) applies in source order,
// one statement per change, with foreign keys checked at each commit.
// Without owning a table it must hold for the migration (here: foreign
// keys), sync stops before applying anything and says so.
func TestSyncOrderedModeForRestrictedTargetRole(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "m", mergeSchema, "public.kv", "public.uniq", "public.comp", "public.parent", "public.child", "public.logonly")
	dst.CreateRole("applier", "applier-pw")
	dst.Exec("m", `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier;
		GRANT ALL ON ALL TABLES IN SCHEMA public, seren_replicator TO applier;`)
	src.Exec("m", mergeWorkload)
	before := checkpointOf(dst, "m")
	res := runCLI(t, nil, "sync", "--catch-up", "--source", src.URL("postgres", "", "m"), "--target", dst.URL("applier", "applier-pw", "m"))
	if res.Code != exitNeedsAction || !strings.Contains(res.Stderr, "must be owner") || checkpointOf(dst, "m") != before {
		t.Fatalf("ordered mode on tables the role does not own: exit %d, want 4 naming ownership, checkpoint untouched\n%s", res.Code, res.Stderr)
	}
	for _, table := range mergeTables {
		dst.Exec("m", "ALTER TABLE "+table+" OWNER TO applier")
	}
	res = runCLI(t, nil, "sync", "--catch-up", "--source", src.URL("postgres", "", "m"), "--target", dst.URL("applier", "applier-pw", "m"))
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	if want := "apply_mode=\"ordered"; !contains(res.Stderr, want) {
		t.Errorf("log does not report ordered mode: %s", res.Stderr)
	}
	if contains(res.Stderr+res.Stdout, "applier-pw") {
		t.Errorf("password in output")
	}
	assertSameTables(t, src, dst, "m", mergeTables...)
}
