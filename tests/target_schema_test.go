package tests

import (
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// An application schema as managed targets get it: identity keys (ALWAYS),
// an updated_at trigger, an audit trigger writing to a replicated table, a
// trigger the user disabled, a rule, a self-referencing foreign key whose
// rows arrive in one statement in an order a row-by-row replay cannot
// check, and a cascading one.
const appSchema = `
CREATE TABLE items (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, last_update timestamptz NOT NULL DEFAULT now());
CREATE TABLE audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item int, op text, at timestamptz DEFAULT now());
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.last_update := now(); RETURN NEW; END $$;
CREATE FUNCTION log_item() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit (item, op) VALUES (NEW.id, TG_OP); RETURN NEW; END $$;
CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER items_audit AFTER INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION log_item();
CREATE TRIGGER items_off BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION touch();
ALTER TABLE items DISABLE TRIGGER items_off;
CREATE TABLE tree (id int PRIMARY KEY, parent int REFERENCES tree);
CREATE TABLE orders (id int PRIMARY KEY, item int NOT NULL REFERENCES items ON DELETE CASCADE);
CREATE TABLE dropped_names (name text PRIMARY KEY);
CREATE RULE keep_names AS ON DELETE TO items DO ALSO INSERT INTO dropped_names VALUES (OLD.name) ON CONFLICT DO NOTHING;
`

var appTables = []string{"items", "audit", "tree", "orders", "dropped_names"}

const appWorkload = `
INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 20) g;
UPDATE items SET name = name || '!' WHERE id <= 5;
INSERT INTO tree VALUES (2, 1), (1, NULL), (3, 2);
INSERT INTO orders SELECT g, g FROM generate_series(1, 10) g;
DELETE FROM items WHERE id = 3;
BEGIN; UPDATE items SET name = 'x' WHERE id = 7; DELETE FROM tree; COMMIT;
INSERT INTO tree VALUES (20, 10), (10, NULL);
`

// The target must end exactly like the source in both apply modes: no
// target trigger or rule fires on apply (the source's effects arrive as
// rows), identity values are the source's, and foreign keys are checked
// per transaction. cleanup puts the target's triggers, rules, identities
// and constraints back exactly as they were.
func TestSyncApplicationSchemaOnTarget(t *testing.T) {
	applyModes(t, func(t *testing.T, src, dst *pgtest.Cluster, target func(string) string) {
		prepareStreaming(t, src, dst, "app", appSchema, "public.items", "public.audit", "public.tree", "public.orders", "public.dropped_names")
		targetURL := target("app")
		if strings.Contains(targetURL, "applier") {
			// A plain database owner, as on a managed service.
			dst.Exec("app", `ALTER TABLE items OWNER TO applier; ALTER TABLE audit OWNER TO applier; ALTER TABLE tree OWNER TO applier;
				ALTER TABLE orders OWNER TO applier; ALTER TABLE dropped_names OWNER TO applier; ALTER SCHEMA seren_replicator OWNER TO applier;
				ALTER TABLE seren_replicator.checkpoint OWNER TO applier`)
			// A table of the target's own, outside the migration and not the
			// role's, with a key to a replicated table: left as it is.
			dst.Exec("app", `CREATE TABLE target_only (item int REFERENCES items)`)
		}
		state := func() string {
			return dst.QueryString("app", `SELECT string_agg(x, ' ' ORDER BY x) FROM (
				SELECT tgname || '=' || tgenabled::text AS x FROM pg_trigger WHERE NOT tgisinternal
				UNION ALL SELECT rulename || '=' || ev_enabled::text FROM pg_rewrite WHERE rulename = 'keep_names'
				UNION ALL SELECT attrelid::regclass::text || '.' || attname || '=' || attidentity::text FROM pg_attribute WHERE attidentity <> ''
				UNION ALL SELECT conname || '=' || condeferrable::text FROM pg_constraint WHERE contype = 'f') s`)
		}
		before := state()
		src.Exec("app", appWorkload)
		res := runCLI(t, nil, "sync", "--catch-up", "--source", src.URL("postgres", "", "app"), "--target", targetURL)
		if res.Code != 0 {
			t.Fatalf("catch-up: exit %d\n%s", res.Code, res.Stderr)
		}
		assertSameTables(t, src, dst, "app", appTables...)
		if got := dst.QueryString("app", `SELECT string_agg(tgname, ',') FROM pg_trigger WHERE tgname = 'items_off' AND tgenabled = 'D'`); got != "items_off" {
			t.Errorf("the trigger the user disabled was touched")
		}
		held := "identity id on \"public\".\"items\""
		if strings.Contains(targetURL, "applier") {
			held = "trigger items_touch on \"public\".\"items\""
		}
		st := runCLI(t, nil, "status", "--source", src.URL("postgres", "", "app"), "--target", targetURL)
		if !strings.Contains(st.Stdout, "held on the target") || !strings.Contains(st.Stdout, held) {
			t.Errorf("status does not show %s held:\n%s\n%s", held, st.Stdout, st.Stderr)
		}
		// More changes in a second session: holds already in place.
		src.Exec("app", `UPDATE items SET name = 'again' WHERE id = 1; INSERT INTO items (name) VALUES ('late'); DELETE FROM items WHERE id = 2`)
		if res := runCLI(t, nil, "sync", "--catch-up", "--source", src.URL("postgres", "", "app"), "--target", targetURL); res.Code != 0 {
			t.Fatalf("second catch-up: exit %d\n%s", res.Code, res.Stderr)
		}
		assertSameTables(t, src, dst, "app", appTables...)

		res = runCLI(t, nil, "cleanup", "--yes", "--source", src.URL("postgres", "", "app"), "--target", targetURL)
		if res.Code != 0 {
			t.Fatalf("cleanup: exit %d\n%s", res.Code, res.Stderr)
		}
		if after := state(); after != before {
			t.Errorf("cleanup left the target's triggers, rules, identities or foreign keys changed:\nbefore %s\nafter  %s\n%s", before, after, res.Stdout)
		}
		// The restored triggers fire again for the application.
		dst.Exec("app", `INSERT INTO items (name) VALUES ('after cutover')`)
		if got := dst.QueryString("app", `SELECT count(*) FROM audit WHERE item = (SELECT id FROM items WHERE name = 'after cutover')`); got != "1" {
			t.Errorf("audit trigger after cleanup: %s rows, want 1", got)
		}
	})
}

// cleanup --force while a daemon streams: the daemon loses its slot and
// exits, and only then are the target's triggers, identities and foreign
// keys restored, so nothing is held again behind cleanup's back.
func TestCleanupForceWhileSyncRuns(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "app", appSchema, "public.items", "public.audit", "public.tree", "public.orders", "public.dropped_names")
	dst.CreateRole("applier", "applier-pw")
	dst.Exec("app", `ALTER TABLE items OWNER TO applier; ALTER TABLE audit OWNER TO applier; ALTER TABLE tree OWNER TO applier;
		ALTER TABLE orders OWNER TO applier; ALTER TABLE dropped_names OWNER TO applier; ALTER SCHEMA seren_replicator OWNER TO applier;
		ALTER TABLE seren_replicator.checkpoint OWNER TO applier; ALTER TABLE seren_replicator.tables OWNER TO applier;
		ALTER TABLE seren_replicator.source_columns OWNER TO applier`)
	target := dst.URL("applier", "applier-pw", "app")
	held := `SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'D'`
	before := dst.QueryString("app", held)
	daemon := startSync(t, nil, "sync", "--source", src.URL("postgres", "", "app"), "--target", target)
	src.Exec("app", appWorkload)
	eventually(t, 30*time.Second, "the daemon to hold the triggers", func() bool {
		return dst.QueryString("app", held) != before
	})
	res := runCLI(t, nil, "cleanup", "--yes", "--force", "--source", src.URL("postgres", "", "app"), "--target", target)
	if res.Code != 0 {
		t.Fatalf("cleanup --force: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if err := daemon.Wait(); err == nil {
		t.Errorf("the daemon went on without its slot")
	}
	if got := dst.QueryString("app", held); got != before {
		t.Errorf("after cleanup %s triggers are disabled, want %s (the user's own)\n%s", got, before, res.Stdout)
	}
}
