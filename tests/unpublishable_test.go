package tests

import (
	"regexp"
	"strings"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// Tables the stream cannot carry (unlogged ones, ones without a key) are
// named by validate and refused by init before anything is created, and the
// way out that init prints works when followed. Tables never selected
// (foreign ones) are named by validate too.
func TestInitRefusesTablesTheStreamCannotCarry(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE mix")
	src.Exec("mix", `CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1);
		CREATE UNLOGGED TABLE cache (k text PRIMARY KEY, v text);
		CREATE TABLE "ImportLog" (line text);
		CREATE EXTENSION postgres_fdw; CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'x');
		CREATE FOREIGN TABLE remote_rates (code text, rate numeric) SERVER elsewhere;`)
	res := runCLI(t, nil, "validate", "--source", src.DSN("mix"), "--target", dst.DSN("mix"))
	for _, want := range []string{"unlogged tables", "mix.public.cache", "SET LOGGED", "replica identity", `--exclude-tables mix.public."ImportLog"`,
		"tables never replicated", "public.remote_rates (foreign table"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("validate does not say %q:\n%s", want, res.Stdout)
		}
	}
	if res.Code != 1 {
		t.Errorf("validate exit %d, want 1", res.Code)
	}
	var excluded []string
	for range 2 {
		res = runCLI(t, nil, initArgs(src, dst, "mix", "mix", append([]string{}, excluded...)...)...)
		if res.Code != 2 {
			t.Fatalf("init: exit %d, want 2\n%s", res.Code, res.Stderr)
		}
		if got := src.QueryString("mix", `SELECT count(*) FROM pg_publication`); got != "0" {
			t.Fatalf("refused init created a publication")
		}
		m := regexp.MustCompile(`--exclude-tables (\S+)`).FindStringSubmatch(res.Stderr)
		if m == nil {
			t.Fatalf("init does not say which tables to exclude:\n%s", res.Stderr)
		}
		if len(excluded) > 0 {
			excluded[1] += "," + m[1]
		} else {
			excluded = []string{"--exclude-tables", m[1]}
		}
	}
	if res = runCLI(t, nil, initArgs(src, dst, "mix", "mix", excluded...)...); res.Code != 0 {
		t.Fatalf("init following its own advice (%v): exit %d\n%s", excluded, res.Code, res.Stderr)
	}
	if got := dst.QueryString("mix", "SELECT count(*) FROM kept"); got != "1" {
		t.Errorf("kept has %s rows on the target", got)
	}
}
