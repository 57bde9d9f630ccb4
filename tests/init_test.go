package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// richSchema exercises what init must carry: several schemas, quoted and
// unicode identifiers, enum/composite/domain/array/extension types,
// identity and generated columns, FKs, partitioned and sub-partitioned
// tables, inheritance, a table without a key, TOASTed values, large
// objects, sequences, views, a materialized view, functions and triggers.
const richSchema = `
CREATE ROLE app_owner NOLOGIN;
CREATE ROLE app_reader LOGIN PASSWORD 'reader-pw';
CREATE ROLE app_admin SUPERUSER REPLICATION BYPASSRLS NOLOGIN;
GRANT app_owner TO app_reader;
CREATE EXTENSION hstore;
CREATE SCHEMA app AUTHORIZATION app_owner;
CREATE SCHEMA "Ünïcode Schema";
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE app.pair AS (a int, b text);
CREATE DOMAIN app.posint AS int CHECK (VALUE > 0);
CREATE TABLE app.customers (
	id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name text NOT NULL UNIQUE,
	mood app.mood,
	tags text[],
	pair app.pair,
	moods app.mood[],
	n app.posint,
	attrs hstore
);
ALTER TABLE app.customers OWNER TO app_owner;
GRANT SELECT ON app.customers TO app_reader;
CREATE TABLE app.orders (
	id bigserial PRIMARY KEY,
	customer_id int NOT NULL REFERENCES app.customers (id),
	amount numeric(12,2),
	doubled numeric GENERATED ALWAYS AS (amount * 2) STORED,
	placed timestamptz DEFAULT now(),
	note text
);
CREATE INDEX orders_customer ON app.orders (customer_id);
CREATE TABLE app.events (id int NOT NULL, at date NOT NULL, payload jsonb) PARTITION BY RANGE (at);
CREATE TABLE app.events_2023 PARTITION OF app.events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY HASH (id);
CREATE TABLE app.events_2024_a PARTITION OF app.events_2024 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE app.events_2024_b PARTITION OF app.events_2024 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE app.parent (id int PRIMARY KEY, v text);
CREATE TABLE app.child (extra int) INHERITS (app.parent);
CREATE TABLE "Ünïcode Schema"."Mixed Case ""Table""" ("Col 1" int, "ü" text);
CREATE TABLE app.docs (id int PRIMARY KEY, body text, file oid);
CREATE SEQUENCE app.counter START 100;
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := coalesce(NEW.note, '') || '!'; RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE INSERT ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE VIEW app.big_orders AS SELECT * FROM app.orders WHERE amount > 500;
CREATE MATERIALIZED VIEW app.totals AS SELECT customer_id, sum(amount) AS total FROM app.orders GROUP BY customer_id;
CREATE MATERIALIZED VIEW app.top_totals AS SELECT * FROM app.totals WHERE total > 1000;

INSERT INTO app.customers (name, mood, tags, pair, moods, n, attrs)
	SELECT 'customer ' || i, (ARRAY['sad','ok','happy'])[1 + i % 3]::app.mood, ARRAY['t' || i, 'x'],
	       ROW(i, 'p' || i)::app.pair, ARRAY['ok','happy']::app.mood[], 1 + i, hstore('k', i::text)
	FROM generate_series(1, 300) i;
INSERT INTO app.orders (customer_id, amount, note)
	SELECT 1 + i % 300, (i % 1000) + 0.25, CASE WHEN i % 7 = 0 THEN NULL ELSE 'order ' || i END FROM generate_series(1, 6000) i;
INSERT INTO app.events SELECT i, date '2023-06-01' + (i % 400), jsonb_build_object('i', i) FROM generate_series(1, 2000) i;
INSERT INTO app.parent VALUES (1, 'parent only');
INSERT INTO app.child VALUES (2, 'child', 42);
INSERT INTO "Ünïcode Schema"."Mixed Case ""Table""" SELECT i % 5, 'ü' || i FROM generate_series(1, 50) i;
INSERT INTO app.docs SELECT i, (SELECT string_agg(md5(i::text || j::text), '') FROM generate_series(1, 20000) j), NULL FROM generate_series(1, 3) i;
SELECT lo_from_bytea(424242, convert_to(repeat('large object ', 200000), 'UTF8'));
SELECT lo_from_bytea(424243, '\x00ff00'::bytea);
ALTER LARGE OBJECT 424242 OWNER TO app_owner;
GRANT SELECT ON LARGE OBJECT 424243 TO app_reader;
UPDATE app.docs SET file = 424242 WHERE id = 1;
SELECT nextval('app.counter') FROM generate_series(1, 5);
REFRESH MATERIALIZED VIEW app.totals;
REFRESH MATERIALIZED VIEW app.top_totals;
`

// richTables are compared row for row (ONLY: each table's own rows).
var richTables = []string{
	"app.customers", "app.orders", "app.events_2023", "app.events_2024_a", "app.events_2024_b",
	"app.parent", "app.child", `"Ünïcode Schema"."Mixed Case ""Table"""`, "app.docs",
	"app.big_orders", "app.totals", "app.top_totals",
}

// fingerprint is an order-independent digest of a table's rows.
func fingerprint(c *pgtest.Cluster, db, table string) string {
	return c.QueryString(db, fmt.Sprintf(`SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '')
		FROM ONLY %s t`, table))
}

func viewFingerprint(c *pgtest.Cluster, db, view string) string {
	return c.QueryString(db, fmt.Sprintf(`SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM %s t`, view))
}

func assertSameRows(t *testing.T, src, dst *pgtest.Cluster, srcDB, dstDB string, tables []string) {
	t.Helper()
	for _, table := range tables {
		fp := fingerprint
		if strings.HasPrefix(table, "app.big_orders") || strings.HasPrefix(table, "app.totals") || strings.HasPrefix(table, "app.top_totals") {
			fp = viewFingerprint
		}
		if got, want := fp(dst, dstDB, table), fp(src, srcDB, table); got != want {
			t.Errorf("%s: target %s, source %s", table, got, want)
		}
	}
}

func initArgs(src, dst *pgtest.Cluster, srcDB, dstDB string, extra ...string) []string {
	return append([]string{"init", "--yes", "--source", src.DSN(srcDB), "--target", dst.DSN(dstDB)}, extra...)
}

func TestInitRichSchema(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE shop")
	src.Exec("shop", richSchema)
	dst.Exec("postgres", "CREATE DATABASE shop")

	// Small ranges so that the bigger tables are copied in several pieces.
	// A table without a key is refused unless init may give it REPLICA
	// IDENTITY FULL, before anything is created.
	refused := runCLI(t, nil, initArgs(src, dst, "shop", "shop")...)
	if refused.Code != 2 || !strings.Contains(refused.Stderr, "--replica-identity-full") || !strings.Contains(refused.Stderr, "--exclude-tables shop.") {
		t.Fatalf("init with a keyless table: exit %d, want 2 with the ways out:\n%s", refused.Code, refused.Stderr)
	}
	if got := src.QueryString("shop", `SELECT count(*) FROM pg_publication`) + src.QueryString("shop", `SELECT count(*) FROM pg_replication_slots`); got != "00" {
		t.Fatalf("refused init left a publication or slot behind")
	}
	res := runCLI(t, nil, initArgs(src, dst, "shop", "shop", "--jobs", "3", "--chunk-bytes", "65536", "--replica-identity-full")...)
	if res.Code != 0 {
		t.Fatalf("init exit code %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("init output:\n%s\n%s", res.Stdout, res.Stderr)
	assertSameRows(t, src, dst, "shop", "shop", richTables)

	checks := []struct{ name, sql string }{
		{"large objects", `SELECT string_agg(l.oid || ' ' || pg_get_userbyid(l.lomowner) || ' ' || coalesce(l.lomacl::text, '-') || ' ' || md5(lo_get(l.oid)), ',' ORDER BY l.oid) FROM pg_largeobject_metadata l`},
		{"sequence", `SELECT last_value || ' ' || is_called FROM app.counter`},
		{"serial", `SELECT last_value || ' ' || is_called FROM app.orders_id_seq`},
		{"identity", `SELECT last_value || ' ' || is_called FROM app.customers_id_seq`},
		{"indexes", `SELECT string_agg(indexdef, ';' ORDER BY indexdef) FROM pg_indexes WHERE schemaname = 'app'`},
		{"constraints", `SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), ';' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'app'::regnamespace`},
		{"triggers", `SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE NOT tgisinternal`},
		{"functions", `SELECT string_agg(p.oid::regprocedure::text, ',' ORDER BY 1) FROM pg_proc p WHERE pronamespace = 'app'::regnamespace`},
		{"owner", `SELECT tableowner FROM pg_tables WHERE schemaname = 'app' AND tablename = 'customers'`},
		{"grants", `SELECT string_agg(grantee || ' ' || privilege_type, ',' ORDER BY grantee, privilege_type) FROM information_schema.role_table_grants WHERE table_schema = 'app' AND table_name = 'customers'`},
		{"membership", `SELECT pg_has_role('app_reader', 'app_owner', 'MEMBER')`},
		{"extension", `SELECT extname FROM pg_extension WHERE extname = 'hstore'`},
	}
	for _, c := range checks {
		if got, want := dst.QueryString("shop", c.sql), src.QueryString("shop", c.sql); got != want {
			t.Errorf("%s: target %q, source %q", c.name, got, want)
		}
	}
	// The trigger must not have fired during the copy (notes unchanged: checked
	// by the fingerprint) but must fire afterwards.
	dst.Exec("shop", `INSERT INTO app.orders (customer_id, amount, note) VALUES (1, 1, 'new')`)
	if got := dst.QueryString("shop", `SELECT note FROM app.orders WHERE note LIKE 'new%'`); got != "new!" {
		t.Errorf("trigger on the target: note = %q, want new!", got)
	}
	if got := dst.QueryString("shop", `SELECT rolsuper || ' ' || rolreplication FROM pg_roles WHERE rolname = 'app_admin'`); got != "true true" {
		t.Errorf("superuser target: app_admin attributes %q, want true true", got)
	}
	if got, want := dst.QueryString("shop", `SELECT rolpassword FROM pg_authid WHERE rolname = 'app_reader'`),
		src.QueryString("shop", `SELECT rolpassword FROM pg_authid WHERE rolname = 'app_reader'`); got != want {
		t.Errorf("app_reader password hash on the target %q, want the source's", got)
	}
	// The handover point: the checkpoint is the slot's consistent point.
	slot := src.QueryString("shop", `SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'seren_shop'`)
	if got := dst.QueryString("shop", `SELECT end_lsn FROM seren_replicator.checkpoint WHERE slot_name = 'seren_shop'`); got == "" || got != slot {
		t.Errorf("checkpoint %q, slot consistent point %q", got, slot)
	}
	if pieces := dst.QueryString("shop", `SELECT count(*) FROM seren_replicator.init_progress WHERE piece LIKE '%@%'`); pieces == "0" {
		t.Errorf("no table was split into ranges")
	}
	for _, want := range []string{"postgres-seren-replicator sync", "DATABASE", "data", `shop."Ünïcode Schema"."Mixed Case ""Table""" has no primary key or replica identity: init sets REPLICA IDENTITY FULL`} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if got := src.QueryString("shop", `SELECT relreplident FROM pg_class WHERE relname = 'Mixed Case "Table"'`); got != "f" {
		t.Errorf("keyless table's replica identity on the source is %q, want f (FULL)", got)
	}
	if strings.Contains(res.Stdout, "Proceed with replication") {
		t.Errorf("--yes still asked")
	}

	// A second init refuses: the target is initialised.
	again := runCLI(t, nil, initArgs(src, dst, "shop", "shop")...)
	if again.Code != 2 || !strings.Contains(again.Stderr, "--drop-existing") {
		t.Errorf("second init: code %d, stderr %s", again.Code, again.Stderr)
	}
}

func TestInitNeedsConfirmation(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE a; ")
	src.Exec("a", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	res := runCLI(t, nil, "init", "--source", src.DSN("a"), "--target", dst.DSN("a"))
	if res.Code != 2 || !strings.Contains(res.Stderr, "--yes") {
		t.Fatalf("code %d, stderr %s", res.Code, res.Stderr)
	}
	if n := src.QueryString("a", `SELECT count(*) FROM pg_replication_slots`); n != "0" {
		t.Errorf("refused init left %s slots", n)
	}
	if got := dst.QueryString("postgres", `SELECT count(*) FROM pg_database WHERE datname = 'a'`); got != "0" {
		t.Errorf("refused init created the target database")
	}
}

func TestInitMultiDatabaseAndDropExisting(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	for _, db := range []string{"one", "two"} {
		src.Exec("postgres", "CREATE DATABASE "+db)
		src.Exec(db, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 500) i")
	}
	dst.Exec("postgres", "CREATE DATABASE two")
	dst.Exec("two", "CREATE TABLE stale (x int)")

	res := runCLI(t, nil, initArgs(src, dst, "postgres", "postgres")...)
	if res.Code != 2 || !strings.Contains(res.Stderr, "--drop-existing") {
		t.Fatalf("non-empty target: code %d, stderr %s", res.Code, res.Stderr)
	}
	// Something held open on the target database must not stop the drop.
	hold := dst.Connect("two")
	res = runCLI(t, nil, initArgs(src, dst, "postgres", "postgres", "--drop-existing")...)
	if res.Code != 0 {
		t.Fatalf("init exit code %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	_ = hold
	for _, db := range []string{"one", "two"} {
		assertSameRows(t, src, dst, db, db, []string{"t"})
	}
	if got := dst.QueryString("two", `SELECT count(*) FROM pg_tables WHERE tablename = 'stale'`); got != "0" {
		t.Errorf("the dropped database's table survived")
	}
	if got := src.QueryString("postgres", `SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots`); got != "seren_one,seren_two" {
		t.Errorf("slots %q", got)
	}
}

// initWaitFor polls cond until it holds or the time is up.
func initWaitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestInitCopiesOnlySelectedTables(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE sel")
	src.Exec("sel", `CREATE TABLE keep (id int PRIMARY KEY); INSERT INTO keep SELECT generate_series(1, 10);
		CREATE TABLE skip (id int PRIMARY KEY); INSERT INTO skip SELECT generate_series(1, 10);
		CREATE TABLE part (id int NOT NULL) PARTITION BY RANGE (id);
		CREATE TABLE part_1 PARTITION OF part FOR VALUES FROM (0) TO (100);
		INSERT INTO part SELECT generate_series(1, 10)`)
	res := runCLI(t, nil, initArgs(src, dst, "sel", "sel", "--exclude-tables", "sel.skip,sel.part")...)
	if res.Code != 0 {
		t.Fatalf("init exit code %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if got := dst.QueryString("sel", `SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'`); got != "keep" {
		t.Errorf("target tables %q, want keep", got)
	}
	assertSameRows(t, src, dst, "sel", "sel", []string{"keep"})
	if got := src.QueryString("sel", `SELECT string_agg(tablename, ',') FROM pg_publication_tables WHERE pubname = 'seren_sel_pub'`); got != "keep" {
		t.Errorf("publication covers %q, want keep", got)
	}
	if !strings.Contains(res.Stdout, "--exclude-tables sel.skip,sel.part") {
		t.Errorf("the sync command does not repeat the selection:\n%s", res.Stdout)
	}
}
