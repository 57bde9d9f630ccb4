package tests

import (
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// forcedSecretsPair makes a source database rls with a forced table
// secrets (a policy that shows one tenant in four) and an empty target
// database owned by a plain role (with roleOptions), and returns their URLs.
func forcedSecretsPair(t *testing.T, extra string, roleOptions ...string) (src, dst *pgtest.Cluster, source, target string) {
	t.Helper()
	return rlsPair(t, `CREATE TABLE secrets (id int PRIMARY KEY, tenant int NOT NULL);
		INSERT INTO secrets SELECT g, g % 4 FROM generate_series(1, 100) g;
		ALTER TABLE secrets ENABLE ROW LEVEL SECURITY; ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
		CREATE POLICY one_tenant ON secrets USING (tenant = 0);`+extra, roleOptions...)
}

// pg_dump's FORCE comes after the data, and init holds the forced table
// once it is copied: validate right after init says the owned forced table
// is fine (held for the migration), and verify right after init reads it.
func TestRLSAttack2VerifyRightAfterInit(t *testing.T) {
	_, dst, source, target := forcedSecretsPair(t, "")
	if res := runCLI(t, nil, "init", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	v := runCLI(t, nil, "validate", "--source", source, "--target", target)
	hides := strings.Contains(v.Stdout, "would hide rows")
	state := dst.QueryString("rls", `SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.secrets'::regclass`)
	res := runCLI(t, nil, "verify", "--source", source, "--target", target)
	if res.Code != 0 && !strings.Contains(res.Stdout+res.Stderr, "run sync") {
		t.Errorf("verify right after init (no sync yet; target table forced: %s; validate says the target would hide rows: %v): exit %d, want 0 or advice to run sync first\n%s\n%s",
			state, hides, res.Code, lastLines(res.Stdout, 5), lastLines(res.Stderr, 3))
	}
}

// A forced table in a schema and under a name with quotes, backslashes,
// commas, braces, spaces and non-ASCII letters: the session start's text[]
// literal (textArray) must name it exactly, so it is held, applied to and
// given back its FORCE by cleanup.
func TestRLSAttack2ForcedTableWithAwkwardName(t *testing.T) {
	const schema, table = `s"q\,{b} ü`, `t "x",y\z}`
	q := `"s""q\,{b} ü"."t ""x"",y\z}"`
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE rls")
	src.Exec("rls", `CREATE SCHEMA "s""q\,{b} ü";
		CREATE TABLE `+q+` (id int PRIMARY KEY, tenant int NOT NULL);
		INSERT INTO `+q+` SELECT g, g % 4 FROM generate_series(1, 40) g;
		ALTER TABLE `+q+` ENABLE ROW LEVEL SECURITY; ALTER TABLE `+q+` FORCE ROW LEVEL SECURITY;
		CREATE POLICY one_tenant ON `+q+` USING (tenant = 0);`)
	dst.CreateRole("applier", "applier-pw")
	dst.Exec("postgres", "CREATE DATABASE rls OWNER applier")
	source, target := src.URL("postgres", "", "rls"), dst.URL("applier", "applier-pw", "rls")
	if res := runCLI(t, nil, "init", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	if res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("first sync --catch-up: exit %d\n%s", res.Code, lastLines(res.Stderr, 3))
	}
	held := dst.QueryString("rls", `SELECT relforcerowsecurity::text || ' ' || (SELECT count(*) FROM seren_replicator.held WHERE kind = 'row security')
		FROM pg_class WHERE oid = to_regclass('`+q+`')`)
	if held != "false 1" {
		t.Errorf("after a session with no change: %q, want held (false 1)", held)
	}
	src.Exec("rls", `INSERT INTO `+q+` VALUES (41, 1); UPDATE `+q+` SET tenant = 2 WHERE id = 2; DELETE FROM `+q+` WHERE id = 3`)
	if res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("sync --catch-up: exit %d\n%s", res.Code, lastLines(res.Stderr, 3))
	}
	assertSameTables(t, src, dst, "rls", q)
	if res := runCLI(t, nil, "cleanup", "--yes", "--source", source, "--target", dst.URL("postgres", "", "rls")); res.Code != 0 {
		t.Fatalf("cleanup: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if got := dst.QueryString("rls", `SELECT relforcerowsecurity FROM pg_class WHERE oid = to_regclass('`+q+`')`); got != "true" {
		t.Errorf("%s.%s forced after cleanup: %s, want true as on the source", schema, table, got)
	}
}

// The way back after a cutover that gives the forced table its FORCE back:
// the new server (the old target, whose role is the table's owner without
// BYPASSRLS) is the source then, and could not read the table. cutover
// --reverse refuses up front, changing nothing, with advice that works:
// then sync back, verify back and the rollback cutover succeed.
func TestRLSAttack2WayBackFromForcedTable(t *testing.T) {
	src, dst, oldURL, newURL := forcedSecretsPair(t, "", "REPLICATION")
	if res := runCLI(t, nil, "init", "--yes", "--source", oldURL, "--target", newURL); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("rls", "INSERT INTO secrets VALUES (101, 1)")
	if res := runCLI(t, nil, "sync", "--catch-up", "--source", oldURL, "--target", newURL); res.Code != 0 {
		t.Fatalf("sync --catch-up: exit %d\n%s", res.Code, lastLines(res.Stderr, 3))
	}
	res := runCLI(t, []string{quickExit}, "cutover", "--yes", "--grace", "0s", "--reverse", "--source", oldURL, "--target", newURL)
	if res.Code == 0 || !strings.Contains(res.Stderr, "BYPASSRLS") {
		t.Fatalf("cutover --reverse with a forced table the way back cannot read: exit %d, want a refusal naming BYPASSRLS\n%s\n%s", res.Code, res.Stdout, lastLines(res.Stderr, 5))
	}
	if got := src.QueryString("rls", "SELECT count(*) FROM secrets"); got != "101" {
		t.Fatalf("the refused cutover left the source with %s rows", got)
	}
	dst.Exec("postgres", "ALTER ROLE applier BYPASSRLS") // the advice
	res = runCLI(t, []string{quickExit}, "cutover", "--yes", "--grace", "0s", "--reverse", "--source", oldURL, "--target", newURL)
	if res.Code != 0 {
		t.Fatalf("cutover --reverse after the advice: exit %d\n%s\n%s", res.Code, res.Stdout, lastLines(res.Stderr, 5))
	}
	if got := dst.QueryString("rls", `SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.secrets'::regclass`); got != "true" {
		t.Errorf("after cutover the new server's table is forced = %s, want true as on the old one", got)
	}
	writable := []string{"PGOPTIONS=-c default_transaction_read_only=off"}
	if cl := runCLI(t, nil, "cleanup", "--yes", "--source", oldURL, "--target", newURL); cl.Code != 0 {
		t.Fatalf("cleanup of the forward migration: exit %d\n%s\n%s", cl.Code, cl.Stdout, cl.Stderr)
	}
	dst.Exec("rls", "INSERT INTO secrets VALUES (102, 2); UPDATE secrets SET tenant = 3 WHERE id = 4")
	back := runCLI(t, writable, "sync", "--catch-up", "--source", newURL, "--target", oldURL)
	if back.Code != 0 {
		t.Fatalf("sync back to the old server: exit %d\n%s", back.Code, lastLines(back.Stderr, 3))
	}
	assertSameTables(t, dst, src, "rls", "secrets")
	v := runCLI(t, writable, "verify", "--source", newURL, "--target", oldURL)
	if v.Code != 0 {
		t.Errorf("verify of the way back: exit %d, want 0\n%s\n%s", v.Code, lastLines(v.Stdout, 5), lastLines(v.Stderr, 2))
	}
	rb := runCLI(t, writable, "cutover", "--yes", "--grace", "0s", "--source", newURL, "--target", oldURL)
	if rb.Code != 0 {
		t.Errorf("rollback cutover: exit %d, want 0\n%s\n%s", rb.Code, lastLines(rb.Stdout, 5), lastLines(rb.Stderr, 3))
	}
}

// After cutover has given the forced table its FORCE back, the target is
// the application's database: a sync session started on it afterwards (a
// daemon's restart by its service manager, a reconnect, an operator's
// catch-up) must either refuse or leave FORCE alone. Holding the table
// again strips FORCE from the live table with nothing left to restore it
// (the migration is over), so the owner's queries are no longer filtered.
func TestRLSAttack2SyncAfterCutoverKeepsForce(t *testing.T) {
	src, dst, source, target := forcedSecretsPair(t, "")
	if res := runCLI(t, nil, "init", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	src.Exec("rls", "INSERT INTO secrets VALUES (101, 1)")
	if res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("sync --catch-up: exit %d\n%s", res.Code, lastLines(res.Stderr, 3))
	}
	if res := runCLI(t, []string{quickExit}, "cutover", "--yes", "--grace", "0s", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("cutover: exit %d\n%s", res.Code, lastLines(res.Stderr, 3))
	}
	if got := rlsForced(t, dst, "rls", "public", "secrets"); got != "true 0" {
		t.Fatalf("after cutover: %q, want forced with no hold (true 0)", got)
	}
	res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target)
	if got := rlsForced(t, dst, "rls", "public", "secrets"); got != "true 0" {
		t.Errorf("a sync session after cutover (exit %d) left the live table %q, want forced with no hold (true 0)\n%s", res.Code, got, lastLines(res.Stderr, 3))
	}
}

// A carried forced table that init held, then given by an administrator
// to another role: the target role cannot write it (row-level security
// applies to a non-owner), so validate fails it with advice that works for
// a non-owner, sync fails, and the hold stays for cleanup to restore.
func TestRLSAttack2ForcedTableNotOwned(t *testing.T) {
	src, dst, source, target := forcedSecretsPair(t, "")
	if res := runCLI(t, nil, "init", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	dst.Exec("rls", `CREATE ROLE other; ALTER TABLE secrets OWNER TO other; GRANT ALL ON secrets TO applier`)
	v := runCLI(t, nil, "validate", "--source", source, "--target", target)
	if v.Code == 0 || !strings.Contains(v.Stdout, "would hide rows") || !strings.Contains(v.Stdout, "BYPASSRLS") {
		t.Errorf("validate with a forced target table owned by another role: exit %d, want a failure naming the table and BYPASSRLS\n%s", v.Code, v.Stdout)
	}
	src.Exec("rls", "INSERT INTO secrets VALUES (101, 1)")
	res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target)
	if res.Code == 0 {
		t.Errorf("sync --catch-up into a forced table the role does not own: exit 0, want a failure")
	}
	if got := rlsForced(t, dst, "rls", "public", "secrets"); got != "false 1" {
		t.Errorf("a held table the role no longer owns, after sync: %q, want still held (false 1)", got)
	}
}

// Without --ddl-capture a schema change is the operator's to make on the
// target too. The source's FORCE is dropped mid-migration and the target's
// DBA runs the same NO FORCE on the target, where the table is held (so the
// statement changes nothing the tool can see): cleanup then forces the
// table again, leaving the target forced where the source and the target's
// DBA both have it not forced.
func TestRLSAttack2OperatorNoForceDuringMigration(t *testing.T) {
	t.Skip("not fixed, documented: cleanup and cutover put back what the migration held, so a change an operator makes on the target to a held table's FORCE (or a held trigger, identity or key) during the migration is undone; change it after cleanup, or carry it with --ddl-capture")
	src, dst, source, target := forcedSecretsPair(t, "")
	if res := runCLI(t, nil, "init", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	if res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("sync --catch-up: exit %d\n%s", res.Code, lastLines(res.Stderr, 3))
	}
	src.Exec("rls", "ALTER TABLE secrets NO FORCE ROW LEVEL SECURITY")
	dst.Exec("rls", "ALTER TABLE secrets NO FORCE ROW LEVEL SECURITY")
	src.Exec("rls", "INSERT INTO secrets VALUES (101, 1)")
	if res := runCLI(t, nil, "sync", "--catch-up", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("sync --catch-up after NO FORCE on both sides: exit %d\n%s", res.Code, lastLines(res.Stderr, 3))
	}
	assertSameTables(t, src, dst, "rls", "secrets")
	if res := runCLI(t, nil, "cleanup", "--yes", "--source", source, "--target", dst.URL("postgres", "", "rls")); res.Code != 0 {
		t.Fatalf("cleanup: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if got := dst.QueryString("rls", `SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.secrets'::regclass`); got != "false" {
		t.Errorf("after cleanup the target table is forced = %s, want false as on the source (NO FORCE run on both sides during the migration)", got)
	}
}

// cutover with the sync daemon running tells the operator to stop it next;
// until then the application writes to the target. A reconnect of the
// daemon in that window (its target session dropped: a failover, a
// pooler, an idle-session killer) starts a new session, which must not
// strip FORCE from the live table again.
func TestRLSAttack2DaemonReconnectAfterCutover(t *testing.T) {
	longTest(t) // 26 s; TestRLSAttack2SyncAfterCutoverKeepsForce covers the same cause in make test
	src, dst, source, target := forcedSecretsPair(t, "")
	if res := runCLI(t, nil, "init", "--yes", "--source", source, "--target", target); res.Code != 0 {
		t.Fatalf("init: exit %d\n%s", res.Code, res.Stderr)
	}
	daemon := startSync(t, []string{quickExit}, "sync", "--max-retry-delay", "200ms", "--source", source, "--target", target)
	src.Exec("rls", "INSERT INTO secrets VALUES (101, 1)")
	eventually(t, 30*time.Second, "the first row applied", func() bool {
		return dst.QueryString("rls", "SELECT count(*) FROM secrets WHERE id = 101") == "1"
	})
	res := runCLI(t, []string{quickExit}, "cutover", "--yes", "--grace", "0s", "--source", source, "--target", target)
	if res.Code != 0 {
		t.Fatalf("cutover with the daemon: exit %d\n%s\n%s", res.Code, lastLines(res.Stderr, 3), lastLines(syncLog(daemon), 5))
	}
	if got := rlsForced(t, dst, "rls", "public", "secrets"); got != "true 0" {
		t.Fatalf("after cutover: %q, want forced with no hold (true 0)", got)
	}
	dst.Exec("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'applier' AND datname = 'rls'")
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(syncLog(daemon), "msg=streaming") < 2 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if got := rlsForced(t, dst, "rls", "public", "secrets"); got != "true 0" {
		t.Errorf("the daemon reconnected after cutover and left the live table %q, want forced with no hold (true 0)\n%s", got, lastLines(syncLog(daemon), 4))
	}
}
