package tests

import (
	"strings"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// A selection that leaves out a table that selected objects need (a foreign
// key's referenced table, a view's or materialized view's table, the owner
// of a sequence a column default takes) is refused by validate and by init
// before anything is created, instead of failing in pg_restore after the
// whole copy.
func TestSelectionThatCutsDependenciesIsRefused(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE dep")
	src.Exec("dep", `CREATE SCHEMA inventory;
		CREATE TABLE inventory.products (id int PRIMARY KEY, name text);
		CREATE TABLE orders (id int PRIMARY KEY, product_id int REFERENCES inventory.products);
		CREATE MATERIALIZED VIEW product_names AS SELECT name FROM inventory.products;
		CREATE TABLE legacy (id serial PRIMARY KEY);
		CREATE TABLE events (id int PRIMARY KEY DEFAULT nextval('legacy_id_seq'), what text);
		CREATE TABLE audit_log (id int PRIMARY KEY, line text);`)
	cases := []struct {
		exclude string
		want    []string
	}{
		{"dep.inventory.products", []string{`orders (foreign key orders_product_id_fkey) needs excluded table inventory.products`,
			`product_names (materialized view) needs excluded table inventory.products`}},
		{"dep.legacy", []string{`events (default of column id takes sequence legacy_id_seq) needs excluded table legacy`}},
	}
	for _, c := range cases {
		v := runCLI(t, nil, "validate", "--source", src.DSN("dep"), "--target", dst.DSN("dep"), "--exclude-tables", c.exclude)
		res := runCLI(t, nil, initArgs(src, dst, "dep", "dep", "--exclude-tables", c.exclude)...)
		if res.Code != 2 {
			t.Fatalf("init --exclude-tables %s: exit %d, want 2\n%s", c.exclude, res.Code, res.Stderr)
		}
		for _, want := range c.want {
			if !strings.Contains(res.Stderr, want) {
				t.Errorf("init --exclude-tables %s does not say %q:\n%s", c.exclude, want, res.Stderr)
			}
			if !strings.Contains(v.Stdout, want) || v.Code != 1 {
				t.Errorf("validate --exclude-tables %s (exit %d) does not say %q:\n%s", c.exclude, v.Code, want, v.Stdout)
			}
		}
		if got := src.QueryString("dep", `SELECT count(*) FROM pg_publication`); got != "0" {
			t.Fatalf("refused init created a publication")
		}
	}
	res := runCLI(t, nil, initArgs(src, dst, "dep", "dep", "--exclude-tables", "dep.audit_log")...)
	if res.Code != 0 {
		t.Fatalf("init leaving out a table nothing needs: exit %d\n%s", res.Code, res.Stderr)
	}
}
