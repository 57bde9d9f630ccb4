package tests

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// A source table with FORCE ROW LEVEL SECURITY owned by the migration role
// shows that role a quarter of its rows. init must not copy the quarter and
// call it done, and verify must not compare quarters and say "match": both
// fail until the role may bypass the policy, then copy and compare it whole.
func TestRowLevelSecurityIsNeverAFilter(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE rls")
	src.CreateRole("migrator", "migrator-pw", "REPLICATION")
	src.Exec("rls", `GRANT CREATE ON DATABASE rls TO migrator;
		CREATE TABLE secrets (id int PRIMARY KEY, tenant int NOT NULL, v text);
		INSERT INTO secrets SELECT g, g % 4, 'v' || g FROM generate_series(1, 1000) g;
		ALTER TABLE secrets OWNER TO migrator;
		ALTER TABLE secrets ENABLE ROW LEVEL SECURITY; ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
		CREATE POLICY one_tenant ON secrets USING (tenant = 0);`)
	source := src.URL("migrator", "migrator-pw", "rls")
	v := runCLI(t, nil, "validate", "--source", source, "--target", dst.DSN("rls"))
	if v.Code != 1 || !strings.Contains(v.Stdout, "policies would hide rows of public.secrets from migrator") || !strings.Contains(v.Stdout, `ALTER ROLE "migrator" BYPASSRLS`) {
		t.Errorf("validate does not fail on the policy (exit %d):\n%s", v.Code, v.Stdout)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, source)
	if err != nil {
		t.Fatal(err)
	}
	var visible int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM secrets").Scan(&visible); err != nil || visible != 250 {
		t.Fatalf("the policy shows the role %d rows (%v), want 250", visible, err)
	}
	conn.Close(ctx)
	args := []string{"init", "--yes", "--source", source, "--target", dst.DSN("rls")}
	res := runCLI(t, nil, args...)
	if res.Code == 0 || !strings.Contains(res.Stderr, "row-level security") {
		t.Fatalf("init through a row-level security policy: exit %d, want a failure naming row-level security\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("init refused: %s", lastLines(res.Stderr, 1))
	// A failed init removes what it created.
	if got := dst.QueryString("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'rls'"); got != "0" {
		t.Errorf("the failed init left the target database it created")
	}
	if got := src.QueryString("rls", "SELECT count(*) FROM pg_publication") + src.QueryString("rls", "SELECT count(*) FROM pg_replication_slots"); got != "00" {
		t.Errorf("the failed init left its publication or slot on the source")
	}
	// Asked to, it keeps them for inspection (never with a checkpoint).
	if res := runCLI(t, nil, append(args, "--keep-failed")...); res.Code == 0 {
		t.Fatalf("init --keep-failed through the policy succeeded")
	}
	if got := dst.QueryString("rls", "SELECT to_regclass('seren_replicator.checkpoint') IS NULL"); got != "true" {
		t.Errorf("the kept target of a failed init has a checkpoint: it looks complete")
	}
	if got := src.QueryString("rls", "SELECT count(*) FROM pg_publication"); got != "1" {
		t.Errorf("--keep-failed did not keep the publication")
	}

	src.Exec("postgres", "ALTER ROLE migrator BYPASSRLS")
	if res := runCLI(t, nil, append(args, "--drop-existing")...); res.Code != 0 {
		t.Fatalf("init with BYPASSRLS: exit %d\n%s", res.Code, res.Stderr)
	}
	if got := dst.QueryString("rls", "SELECT count(*) FROM secrets"); got != "1000" {
		t.Fatalf("target has %s rows, want 1000", got)
	}

	// verify as a role that sees a quarter on each side must not match.
	dst.CreateRole("checker", "checker-pw")
	dst.Exec("rls", "GRANT SELECT ON ALL TABLES IN SCHEMA public, seren_replicator TO checker; GRANT USAGE ON SCHEMA seren_replicator TO checker; ALTER TABLE secrets OWNER TO checker")
	src.Exec("postgres", "ALTER ROLE migrator NOBYPASSRLS")
	res = runCLI(t, nil, "verify", "--source", source, "--target", dst.URL("checker", "checker-pw", "rls"))
	if res.Code == 0 || strings.Contains(res.Stdout, "all tables match") {
		t.Fatalf("verify through row-level security: exit %d, want a failure\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("verify refused: %s\n%s", res.Stdout, lastLines(res.Stderr, 1))
	if !strings.Contains(res.Stdout+res.Stderr, "row-level security") {
		t.Errorf("verify's failure does not name row-level security:\n%s\n%s", res.Stdout, res.Stderr)
	}
}

// A source table with FORCE ROW LEVEL SECURITY, migrated in ordered mode to
// a target role that owns its copy and does not bypass row security: init
// copies it whole before its post-data schema forces it, and sync holds the
// table without FORCE (its own writes run with row_security = off, which a
// forced policy refuses), so every row arrives; cleanup forces it again.
func TestRowLevelSecurityForcedTableOrdered(t *testing.T) {
	src, dst, source, target := rlsPair(t, `CREATE TABLE secrets (id int PRIMARY KEY, tenant int NOT NULL, v text);
		INSERT INTO secrets SELECT g, g % 4, 'v' || g FROM generate_series(1, 1000) g;
		ALTER TABLE secrets ENABLE ROW LEVEL SECURITY; ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
		CREATE POLICY one_tenant ON secrets USING (tenant = 0);`)
	if res := runCLI(t, nil, "init", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	v := runCLI(t, nil, "validate", "--source", source, "--target", target)
	if strings.Contains(v.Stdout, "would hide rows") || !strings.Contains(v.Stdout, "enabled on public.secrets") {
		t.Errorf("validate after init: the target's forced table is held for the migration, not a failure (exit %d):\n%s", v.Code, v.Stdout)
	}
	src.Exec("rls", "INSERT INTO secrets VALUES (1001, 1, 'x'); UPDATE secrets SET v = 'w' WHERE id = 2; DELETE FROM secrets WHERE id = 3")
	res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target)
	if res.Code != 0 {
		t.Fatalf("sync --catch-up into a forced table: exit %d\n%s", res.Code, res.Stderr)
	}
	assertSameTables(t, src, dst, "rls", "secrets")
	if got := dst.QueryString("rls", `SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.secrets'::regclass`); got != "false" {
		t.Errorf("target table forced while sync runs: %s, want held without FORCE", got)
	}
	if res := runCLI(t, nil, "cleanup", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("cleanup: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if got := dst.QueryString("rls", `SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.secrets'::regclass`); got != "true" {
		t.Errorf("target table forced after cleanup: %s, want true as on the source", got)
	}
}

// rlsPair starts a source and a target, makes database rls on the source
// with sql, and on the target an empty rls owned by the plain role applier
// (with roleOptions); it returns the source's URL as its superuser and the
// target's as applier.
func rlsPair(t *testing.T, sql string, roleOptions ...string) (src, dst *pgtest.Cluster, source, target string) {
	t.Helper()
	src, dst = pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE rls")
	src.Exec("rls", sql)
	dst.CreateRole("applier", "applier-pw", roleOptions...)
	dst.Exec("postgres", "CREATE DATABASE rls OWNER applier")
	return src, dst, src.URL("postgres", "", "rls"), dst.URL("applier", "applier-pw", "rls")
}

// initRLS runs init, then validate, which must not fail a forced table the
// target role owns (init holds it for the migration).
func initRLS(t *testing.T, source, target string) {
	t.Helper()
	if res := runCLI(t, nil, "init", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	if v := runCLI(t, nil, "validate", "--source", source, "--target", target); strings.Contains(v.Stdout, "would hide rows") {
		t.Fatalf("validate after init fails a forced table:\n%s", v.Stdout)
	}
}
