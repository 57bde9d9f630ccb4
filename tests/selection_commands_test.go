package tests

import (
	"strings"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// Patterns select through init and validate (wildcards in database and
// table filters, include and exclude combined, a quoted name with a dot and
// a star); a pattern that matches nothing, or a name in the wrong schema,
// is refused naming it. Then, for each of validate, init, sync, status,
// verify and cleanup, what the selection leaves out is untouched on the
// target (an excluded database with its own checkpoint schema, the postgres
// database, excluded tables never created) and what it selects is complete.
func TestSelectionPatternsAcrossCommands(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	for _, db := range []string{"shop", "crm", "archive_2020", "archive_2021"} {
		src.Exec("postgres", "CREATE DATABASE "+db)
	}
	src.Exec("shop", `CREATE SCHEMA app; CREATE SCHEMA sales; CREATE SCHEMA staging;
		CREATE TABLE app.users (id int PRIMARY KEY, name text);
		CREATE TABLE app.log_2023 (id int PRIMARY KEY, line text);
		CREATE TABLE app.log_2024 (id int PRIMARY KEY, line text);
		CREATE TABLE sales.orders (id int PRIMARY KEY, total numeric);
		CREATE TABLE staging.raw (id int PRIMARY KEY);
		CREATE TABLE public."odd.name*" (id int PRIMARY KEY, v text);
		CREATE TABLE public.odd (id int PRIMARY KEY);
		INSERT INTO app.users SELECT g, 'u' || g FROM generate_series(1, 30) g;
		INSERT INTO app.log_2023 SELECT g, 'l' FROM generate_series(1, 30) g;
		INSERT INTO app.log_2024 SELECT g, 'l' FROM generate_series(1, 30) g;
		INSERT INTO sales.orders SELECT g, g * 1.5 FROM generate_series(1, 30) g;
		INSERT INTO staging.raw SELECT generate_series(1, 30);
		INSERT INTO public."odd.name*" SELECT g, 'o' FROM generate_series(1, 30) g;
		INSERT INTO public.odd SELECT generate_series(1, 30)`)
	src.Exec("crm", `CREATE TABLE contacts (id int PRIMARY KEY, email text);
		INSERT INTO contacts SELECT g, g || '@x' FROM generate_series(1, 30) g`)
	for _, db := range []string{"archive_2020", "archive_2021"} {
		src.Exec(db, "CREATE TABLE old (id int PRIMARY KEY); INSERT INTO old SELECT generate_series(1, 10)")
	}
	src.Exec("postgres", "CREATE TABLE maint (id int PRIMARY KEY); INSERT INTO maint VALUES (1)")
	// On the target: an excluded database holding another migration's
	// checkpoint schema, and the postgres database with a table of its own.
	dst.Exec("postgres", "CREATE DATABASE archive_2020")
	dst.Exec("archive_2020", `CREATE TABLE old (id int PRIMARY KEY); INSERT INTO old VALUES (42);
		CREATE SCHEMA seren_replicator; CREATE TABLE seren_replicator.marker (v text); INSERT INTO seren_replicator.marker VALUES ('other migration')`)
	dst.Exec("postgres", "CREATE TABLE mine (v text); INSERT INTO mine VALUES ('target only')")

	endpoints := []string{"--source", src.DSN("postgres"), "--target", dst.DSN("postgres")}
	selection := []string{"--exclude-databases", "archive_*",
		"--include-tables", `shop.app.*,shop.sales.orders,shop."odd.name*"`,
		"--exclude-tables", "shop.app.log_*"}
	cmd := func(name string, extra ...string) []string {
		return append(append(append([]string{name}, endpoints...), selection...), extra...)
	}

	t.Run("patterns that match nothing", func(t *testing.T) {
		cases := []struct {
			flag, value, want string
		}{
			{"--include-tables", "shop.orders", "--include-tables shop.orders matches no table (did you mean shop.sales.orders?)"},
			{"--exclude-tables", "shop.app.nothing_*", "--exclude-tables shop.app.nothing_* matches no table"},
			{"--include-tables", "*.audit_*", "--include-tables *.audit_* matches no table"},
			{"--include-databases", "arch*_19*", "--include-databases arch*_19* matches no database"},
			{"--include-databases", "shopp", "(did you mean shop?)"},
		}
		for _, c := range cases {
			for _, command := range []string{"validate", "init"} {
				args := append(append([]string{command, "--yes"}, endpoints...), c.flag, c.value)
				if command == "validate" {
					args = append(append([]string{command}, endpoints...), c.flag, c.value)
				}
				res := runCLI(t, nil, args...)
				if res.Code != 2 || !strings.Contains(res.Stderr, c.want) {
					t.Errorf("%s %s %s: exit %d, want 2 saying %q\n%s", command, c.flag, c.value, res.Code, c.want, res.Stderr)
				}
			}
		}
		if got := dst.QueryString("postgres", "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE NOT datistemplate"); got != "archive_2020,postgres" {
			t.Fatalf("a refused run created target databases: %s", got)
		}
	})

	selected := map[string][]string{
		"shop": {"app.users", "sales.orders", `public."odd.name*"`},
		"crm":  {"contacts"},
	}
	// untouched checks what the selection leaves out, on both sides.
	untouched := func(t *testing.T, after string) {
		t.Helper()
		checks := []struct {
			c             *pgtest.Cluster
			db, sql, want string
		}{
			{dst, "archive_2020", "SELECT string_agg(id::text, ',') FROM old", "42"},
			{dst, "archive_2020", "SELECT string_agg(v, ',') FROM seren_replicator.marker", "other migration"},
			{dst, "archive_2020", "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')", "2"},
			{dst, "postgres", "SELECT string_agg(v, ',') FROM mine", "target only"},
			{dst, "postgres", "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'", "mine"},
			{dst, "postgres", "SELECT count(*) FROM pg_namespace WHERE nspname = 'seren_replicator'", "0"},
			{dst, "postgres", "SELECT count(*) FROM pg_database WHERE datname = 'archive_2021'", "0"},
			{src, "archive_2020", "SELECT count(*) FROM pg_publication", "0"},
			{src, "postgres", "SELECT count(*) FROM pg_publication", "0"},
			{src, "postgres", "SELECT count(*) FROM pg_replication_slots WHERE database NOT IN ('shop', 'crm')", "0"},
		}
		for _, c := range checks {
			if got := c.c.QueryString(c.db, c.sql); got != c.want {
				t.Errorf("after %s: %s on %s: got %q, want %q", after, c.sql, c.db, got, c.want)
			}
		}
		if dst.QueryString("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'shop'") == "1" {
			// Only the selected tables exist on the target (the checkpoint
			// schema's apart).
			got := dst.QueryString("shop", `SELECT string_agg(n, ',' ORDER BY n) FROM (SELECT format('%I.%I', schemaname, tablename) AS n FROM pg_tables
				WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'seren_replicator')) t`)
			if want := `app.users,public."odd.name*",sales.orders`; got != want {
				t.Errorf("after %s: target shop has %s, want %s", after, got, want)
			}
		}
	}
	complete := func(t *testing.T, after string) {
		t.Helper()
		for db, tables := range selected {
			for _, table := range tables {
				if got, want := fingerprint(dst, db, table), fingerprint(src, db, table); got != want {
					t.Errorf("after %s: %s.%s: target %s, source %s", after, db, table, got, want)
				}
			}
		}
	}
	published := func(t *testing.T) {
		t.Helper()
		got := src.QueryString("shop", `SELECT string_agg(n, ',' ORDER BY n) FROM (SELECT format('%I.%I', schemaname, tablename) AS n FROM pg_publication_tables) t`)
		if want := `app.users,public."odd.name*",sales.orders`; got != want {
			t.Errorf("publication of shop covers %s, want %s", got, want)
		}
	}
	run := func(t *testing.T, args []string) Result {
		t.Helper()
		res := runCLI(t, nil, args...)
		if res.Code != 0 {
			t.Fatalf("%s: exit %d\n%s\n%s", args[0], res.Code, res.Stdout, res.Stderr)
		}
		return res
	}

	t.Run("validate", func(t *testing.T) {
		res := run(t, cmd("validate"))
		for _, leftOut := range []string{"(archive_2020)", "(archive_2021)", "(postgres)"} {
			if strings.Contains(res.Stdout, leftOut) {
				t.Errorf("validate checks %s, which the selection leaves out:\n%s", leftOut, res.Stdout)
			}
		}
		untouched(t, "validate")
	})
	t.Run("init", func(t *testing.T) {
		run(t, cmd("init", "--yes"))
		untouched(t, "init")
		complete(t, "init")
		published(t)
	})
	t.Run("sync", func(t *testing.T) {
		src.Exec("shop", `INSERT INTO app.users VALUES (100, 'late'); INSERT INTO app.log_2024 VALUES (100, 'late');
			UPDATE sales.orders SET total = 0 WHERE id < 5; INSERT INTO public."odd.name*" VALUES (100, 'late');
			INSERT INTO staging.raw VALUES (100); DELETE FROM public.odd WHERE id < 5`)
		src.Exec("crm", "INSERT INTO contacts VALUES (100, 'late@x')")
		src.Exec("archive_2020", "INSERT INTO old VALUES (100)")
		src.Exec("postgres", "INSERT INTO maint VALUES (2)")
		run(t, cmd("sync", "--catch-up"))
		untouched(t, "sync")
		complete(t, "sync")
	})
	t.Run("status", func(t *testing.T) {
		res := run(t, cmd("status"))
		if strings.Contains(res.Stdout, "archive") {
			t.Errorf("status reports an excluded database:\n%s", res.Stdout)
		}
		untouched(t, "status")
	})
	t.Run("verify", func(t *testing.T) {
		res := run(t, cmd("verify"))
		for _, leftOut := range []string{"archive", "log_2023", "staging", "public.odd "} {
			if strings.Contains(res.Stdout, leftOut) {
				t.Errorf("verify compares %s, which the selection leaves out:\n%s", leftOut, res.Stdout)
			}
		}
		untouched(t, "verify")
		complete(t, "verify")
	})
	t.Run("cleanup", func(t *testing.T) {
		run(t, cmd("cleanup", "--yes"))
		untouched(t, "cleanup")
		complete(t, "cleanup")
		for _, db := range []string{"shop", "crm"} {
			if got := dst.QueryString(db, "SELECT count(*) FROM pg_namespace WHERE nspname = 'seren_replicator'"); got != "0" {
				t.Errorf("cleanup left the checkpoint schema in %s", db)
			}
		}
	})
}
