package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// The migration remembers: init records its selection, slot and
// publication on the target, and sync, status, verify and cleanup given
// only --source and --target work on exactly that selection (a database
// and a table it leaves out stay untouched); a selection inside it is
// fine, one reaching outside it or a different --publication is refused
// naming the difference; sync may add tables, and the record follows. A
// --config file drives a command, and a flag, then an environment
// variable, win over it; an unknown key is refused by name, and no
// password from the file is printed.
func TestMigrationRemembersItsSettings(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	for _, db := range []string{"shop", "crm", "other"} {
		src.Exec("postgres", "CREATE DATABASE "+db)
	}
	src.Exec("shop", `CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text);
		CREATE TABLE skip (id int PRIMARY KEY, v text);
		INSERT INTO a SELECT g, 'a' FROM generate_series(1, 50) g; INSERT INTO b SELECT g, 'b' FROM generate_series(1, 50) g;
		INSERT INTO skip SELECT g, 's' FROM generate_series(1, 50) g`)
	src.Exec("crm", `CREATE TABLE c (id int PRIMARY KEY, v text); INSERT INTO c SELECT g, 'c' FROM generate_series(1, 50) g`)
	src.Exec("other", `CREATE TABLE o (id int PRIMARY KEY); INSERT INTO o VALUES (1)`)

	endpoints := []string{"--source", src.URL("postgres", "", "postgres"), "--target", dst.URL("postgres", "", "postgres")}
	cmd := func(name string, extra ...string) []string {
		return append(append([]string{name}, endpoints...), extra...)
	}
	mustRun := func(t *testing.T, args ...string) Result {
		t.Helper()
		res := runCLI(t, nil, args...)
		if res.Code != 0 {
			t.Fatalf("%s: exit %d\n%s\n%s", strings.Join(args, " "), res.Code, res.Stdout, res.Stderr)
		}
		return res
	}
	refused := func(t *testing.T, res Result, want ...string) {
		t.Helper()
		if res.Code != 2 {
			t.Errorf("exit %d, want 2\n%s", res.Code, res.Stderr)
		}
		for _, w := range want {
			if !strings.Contains(res.Stderr, w) {
				t.Errorf("stderr does not say %q:\n%s", w, res.Stderr)
			}
		}
	}
	shopTables := "a,b"
	untouched := func(t *testing.T) {
		t.Helper()
		if got := dst.QueryString("postgres", "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE NOT datistemplate"); got != "crm,postgres,shop" {
			t.Errorf("target databases %s, want crm,postgres,shop", got)
		}
		if got := dst.QueryString("shop", "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'"); got != shopTables {
			t.Errorf("target shop has tables %s, want %s", got, shopTables)
		}
		if got := src.QueryString("other", "SELECT count(*) FROM pg_publication"); got != "0" {
			t.Errorf("the left-out database has %s publications", got)
		}
	}
	complete := func(t *testing.T) {
		t.Helper()
		for _, c := range []struct{ db, table string }{{"shop", "a"}, {"shop", "b"}, {"crm", "c"}} {
			if got, want := fingerprint(dst, c.db, c.table), fingerprint(src, c.db, c.table); got != want {
				t.Errorf("%s.%s: target %s, source %s", c.db, c.table, got, want)
			}
		}
	}
	// verified are the tables a verify --json report compares.
	verified := func(t *testing.T, res Result) string {
		t.Helper()
		var rep struct {
			Databases []struct {
				Name   string `json:"name"`
				Tables []struct {
					Schema string `json:"schema"`
					Name   string `json:"name"`
				} `json:"tables"`
			} `json:"databases"`
		}
		if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil {
			t.Fatalf("verify --json: %v (exit %d)\n%s\n%s", err, res.Code, res.Stdout, res.Stderr)
		}
		var out []string
		for _, d := range rep.Databases {
			for _, tb := range d.Tables {
				out = append(out, d.Name+"."+tb.Schema+"."+tb.Name)
			}
		}
		return strings.Join(out, ",")
	}

	mustRun(t, cmd("init", "--yes", "--exclude-databases", "other", "--exclude-tables", "shop.skip", "--publication", "mig_pub")...)
	untouched(t)

	t.Run("sync, status and verify with only the connection strings", func(t *testing.T) {
		src.Exec("shop", `INSERT INTO a VALUES (100, 'late'); UPDATE b SET v = 'changed' WHERE id < 10; INSERT INTO skip VALUES (100, 'late')`)
		src.Exec("crm", `DELETE FROM c WHERE id < 5`)
		src.Exec("other", `INSERT INTO o VALUES (2)`)
		mustRun(t, cmd("sync", "--catch-up")...)
		complete(t)
		untouched(t)
		// Status may find a slot stalled (no sync runs); its report is
		// what counts here.
		st := runCLI(t, nil, cmd("status")...)
		if st.Code > 1 {
			t.Fatalf("status: exit %d\n%s", st.Code, st.Stderr)
		}
		if !strings.Contains(st.Stdout, "shop") || !strings.Contains(st.Stdout, "crm") || strings.Contains(st.Stdout, "other") {
			t.Errorf("status does not report exactly shop and crm:\n%s", st.Stdout)
		}
		if got := verified(t, mustRun(t, cmd("verify", "--json")...)); got != "crm.public.c,shop.public.a,shop.public.b" {
			t.Errorf("verify compares %s, want crm.public.c,shop.public.a,shop.public.b", got)
		}
		// A source URL naming one database finds its part of the record.
		one := []string{"verify", "--json", "--source", src.DSN("shop"), "--target", dst.DSN("shop")}
		if got := verified(t, mustRun(t, one...)); got != "shop.public.a,shop.public.b" {
			t.Errorf("verify of shop alone compares %s, want shop.public.a,shop.public.b", got)
		}
	})

	t.Run("flags given against the record", func(t *testing.T) {
		// The same selection, spelled as init had it, and a part of it.
		if res := runCLI(t, nil, cmd("status", "--exclude-databases", "other", "--exclude-tables", "shop.skip", "--publication", "mig_pub")...); res.Code > 1 {
			t.Errorf("status with the recorded flags: exit %d\n%s", res.Code, res.Stderr)
		}
		if got := verified(t, mustRun(t, cmd("verify", "--json", "--include-tables", "shop.b")...)); got != "crm.public.c,shop.public.b" {
			t.Errorf("verify --include-tables shop.b compares %s, want crm.public.c,shop.public.b", got)
		}
		refused(t, runCLI(t, nil, cmd("status", "--include-tables", "shop.skip")...), "--include-tables selects table shop.public.skip", "leaves out", "--exclude-tables shop.skip")
		refused(t, runCLI(t, nil, cmd("verify", "--exclude-databases", "crm,shop")...), "database other", "its databases: crm, shop")
		refused(t, runCLI(t, nil, cmd("cleanup", "--yes", "--publication", "other_pub")...), "--publication other_pub differs", "mig_pub")
		untouched(t)
	})

	t.Run("config file", func(t *testing.T) {
		dir := t.TempDir()
		write := func(name, body string) string {
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}
		good := write("seren.yaml", "# a migration\nsource: "+src.URL("postgres", "", "postgres")+"\ntarget: '"+dst.URL("postgres", "", "postgres")+
			"'\ninclude-tables: [shop.a, crm.c]\njobs: 2\ncatch-up: true\n")
		if got := verified(t, mustRun(t, "verify", "--json", "--config", good)); got != "crm.public.c,shop.public.a" {
			t.Errorf("verify --config compares %s, want crm.public.c,shop.public.a", got)
		}
		if got := verified(t, mustRun(t, "verify", "--json", "--config", good, "--include-tables", "shop.b")); got != "crm.public.c,shop.public.b" {
			t.Errorf("verify --config --include-tables shop.b compares %s, want crm.public.c,shop.public.b", got)
		}
		env := runCLI(t, []string{"SEREN_INCLUDE_TABLES=crm.c", "SEREN_CONFIG=" + good}, "verify", "--json")
		if got := verified(t, env); got != "crm.public.c,shop.public.a,shop.public.b" {
			t.Errorf("verify with SEREN_INCLUDE_TABLES over the file compares %s, want crm.public.c,shop.public.a,shop.public.b", got)
		}
		bad := write("bad.yaml", "source: postgres://u:sekret@127.0.0.1/x\ntarget: postgres://u:sekret@127.0.0.1/y\ninclude-tabels: [shop.a]\n")
		res := runCLI(t, nil, "status", "--config", bad)
		refused(t, res, `unknown key "include-tabels"`, "bad.yaml")
		notMapping := write("list.yaml", "- postgres://u:sekret@127.0.0.1/x\n")
		res2 := runCLI(t, nil, "status", "--config", notMapping)
		refused(t, res2, "not a mapping")
		for _, r := range []Result{res, res2} {
			if strings.Contains(r.Stdout+r.Stderr, "sekret") {
				t.Errorf("a password from the file is printed:\n%s\n%s", r.Stdout, r.Stderr)
			}
		}
	})

	t.Run("sync adds a table and the record follows", func(t *testing.T) {
		res := mustRun(t, cmd("sync", "--catch-up", "--exclude-tables", "")...)
		if !strings.Contains(res.Stderr, "the migration's record holds the new selection") {
			t.Errorf("sync does not say the record changed:\n%s", res.Stderr)
		}
		shopTables = "a,b,skip"
		if got, want := fingerprint(dst, "shop", "skip"), fingerprint(src, "shop", "skip"); got != want {
			t.Errorf("shop.skip after it joined: target %s, source %s", got, want)
		}
		if got := verified(t, mustRun(t, cmd("verify", "--json")...)); got != "crm.public.c,shop.public.a,shop.public.b,shop.public.skip" {
			t.Errorf("verify after the table joined compares %s", got)
		}
		untouched(t)
	})

	t.Run("sync leaves a table out and the record follows", func(t *testing.T) {
		res := mustRun(t, cmd("sync", "--catch-up", "--exclude-tables", "shop.skip")...)
		for _, want := range []string{"table removed from the migration", "the migration's record holds the new selection"} {
			if !strings.Contains(res.Stderr, want) {
				t.Errorf("sync does not say %q:\n%s", want, res.Stderr)
			}
		}
		if got := src.QueryString("shop", "SELECT count(*) FROM pg_publication_tables WHERE tablename = 'skip'"); got != "0" {
			t.Errorf("shop.skip is still published")
		}
		if got := verified(t, mustRun(t, cmd("verify", "--json")...)); got != "crm.public.c,shop.public.a,shop.public.b" {
			t.Errorf("verify after the table left compares %s", got)
		}
		untouched(t) // its copy on the target is kept
	})

	t.Run("cleanup with only the connection strings", func(t *testing.T) {
		mustRun(t, cmd("cleanup", "--yes")...)
		for _, db := range []string{"shop", "crm"} {
			if got := src.QueryString(db, "SELECT count(*) FROM pg_publication"); got != "0" {
				t.Errorf("cleanup left %s publications in %s", got, db)
			}
		}
		if got := src.QueryString("postgres", "SELECT count(*) FROM pg_replication_slots"); got != "0" {
			t.Errorf("cleanup left %s slots", got)
		}
		untouched(t)
		complete(t)
	})
}
