package tests

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

const cutoverSchema = workloadSchema + `
CREATE TABLE ev (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);`

// cutover under a live write workload with the sync daemon running: the
// source is fenced read-only (sessions connected before are ended), the
// daemon drains to the fence, sequences are copied, the tables checked
// (verify against the running daemon before the fence, the rows written
// since compared at the fence), the identity column the
// migration held is put back, and the target ends equal to the source,
// whose later writes are refused; the printed write pause covers the
// time the probe's writes were refused.
func TestCutoverUnderLoadWithDaemon(t *testing.T) {
	src, dst := pgtestPair(t)
	target := prepareCutover(t, src, dst, "shop", "replica")
	daemon := startSync(t, nil, "sync", "--source", src.URL("postgres", "", "shop"), "--target", target)
	src.Exec("shop", `INSERT INTO ev (v) SELECT 'e' || g FROM generate_series(1, 50) g`)
	eventually(t, 30*time.Second, "the identity column held", func() bool {
		return dst.QueryString("shop", "SELECT attidentity FROM pg_attribute WHERE attrelid = 'ev'::regclass AND attname = 'id'") == "d"
	})
	w := startWorkload(t, src, "shop", 3)
	probe := startProbe(t, src, "shop")
	time.Sleep(3 * time.Second)

	start := time.Now()
	res := runCLI(t, []string{quickExit}, "cutover", "--yes", "--grace", "1s", "--source", src.URL("postgres", "", "shop"), "--target", target)
	end := time.Now()
	txns := w.stop()
	if res.Code != 0 {
		t.Fatalf("cutover: exit %d\n%s\n%s\n%s", res.Code, res.Stdout, res.Stderr, syncLog(daemon))
	}
	for _, want := range []string{"verify", "fence", "drain", "sequences", "check", "restore", "write pause:", "compared one by one", "stop the sync daemon"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("cutover output lacks %q:\n%s", want, res.Stdout)
		}
	}
	t.Logf("%d workload transactions; cutover took %s:\n%s", txns, end.Sub(start), res.Stdout)
	assertCutoverPause(t, res.Stdout, start, end, probe)
	if !strings.Contains(res.Stdout, "ended pid") {
		t.Errorf("the workload's sessions were not ended at the fence:\n%s", res.Stdout)
	}
	// The source takes no more writes, and status says so with the way back.
	if got := src.QueryString("shop", "current_setting('default_transaction_read_only')"); got != "on" {
		t.Errorf("new source sessions are read-only = %s, want on", got)
	}
	if st := runCLI(t, nil, "status", "--source", src.URL("postgres", "", "shop"), "--target", target); !strings.Contains(st.Stdout+st.Stderr, "RESET default_transaction_read_only") {
		t.Errorf("status does not say the source is fenced:\n%s%s", st.Stdout, st.Stderr)
	}
	daemon.Process.Signal(syscall.SIGTERM)
	if err := daemon.Wait(); err != nil {
		t.Fatalf("sync: %v\n%s", err, syncLog(daemon))
	}
	assertCutoverState(t, src, dst, "shop")
	if got := dst.QueryString("shop", "SELECT attidentity FROM pg_attribute WHERE attrelid = 'ev'::regclass AND attname = 'id'"); got != "a" {
		t.Errorf("identity on the target is %q after cutover, want a (ALWAYS, as on the source)", got)
	}
}

// --fence=none: the user stops the application (here the workload, with the
// daemon behind), and cutover, after checking nobody is connected, drains
// through the daemon in ordered mode: the triggers and foreign keys the
// migration held come back as on the source.
func TestCutoverWithNoFence(t *testing.T) {
	src, dst := pgtestPair(t)
	target := prepareCutover(t, src, dst, "nf", "ordered")
	daemon := startSync(t, nil, "sync", "--source", src.URL("postgres", "", "nf"), "--target", target)
	w := startWorkload(t, src, "nf", 3)
	probe := startProbe(t, src, "nf")
	eventually(t, 30*time.Second, "the trigger held", func() bool {
		return dst.QueryString("nf", "SELECT tgenabled FROM pg_trigger WHERE tgname = 'ev_stamp'") == "D"
	})
	time.Sleep(2 * time.Second)
	// The application stops: its sessions close (and this test's own, left
	// open by prepareStreaming, end).
	txns := w.stop()
	probe.stop()
	src.Exec("nf", `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'nf' AND pid <> pg_backend_pid()
		AND backend_type = 'client backend' AND application_name NOT LIKE 'postgres-seren-replicator%'`)
	start := time.Now()
	res := runCLI(t, []string{quickExit}, "cutover", "--yes", "--fence", "none", "--grace", "2s", "--source", src.URL("postgres", "", "nf"), "--target", target)
	end := time.Now()
	if res.Code != 0 {
		t.Fatalf("cutover --fence none: exit %d\n%s\n%s\n%s", res.Code, res.Stdout, res.Stderr, syncLog(daemon))
	}
	t.Logf("%d workload transactions; cutover took %s:\n%s", txns, end.Sub(start), res.Stdout)
	for _, want := range []string{"applied by the sync daemon", "recheck", "compared one by one", "held items put back"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("cutover output lacks %q:\n%s", want, res.Stdout)
		}
	}
	assertCutoverPause(t, res.Stdout, start, end, nil)
	daemon.Process.Signal(syscall.SIGTERM)
	if err := daemon.Wait(); err != nil {
		t.Fatalf("sync: %v\n%s", err, syncLog(daemon))
	}
	assertCutoverState(t, src, dst, "nf")
}

// A cutover whose check fails leaves everything as it was: the source is
// writable again and what the migration held on the target stays held, so
// replication goes on. Once the target is fixed, a cutover without a daemon
// drains by itself and succeeds, naming the owner and grant on the target
// that differ from the source's.
func TestCutoverAbortsAndUnfencesOnAFailedCheck(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "two", cutoverSchema, "public.acct", "public.hist", "public.ev")
	src.Exec("two", `INSERT INTO acct SELECT g, g, NULL FROM generate_series(1, 100) g; INSERT INTO ev (v) VALUES ('x');`)
	catchUp(t, src, dst, "two")
	dst.Exec("two", `DELETE FROM acct WHERE id = 42`)
	src.Exec("two", `INSERT INTO hist (acct, delta) SELECT g, 1 FROM generate_series(1, 10) g`)
	args := []string{"cutover", "--yes", "--grace", "0s", "--source", src.URL("postgres", "", "two"), "--target", dst.URL("postgres", "", "two")}
	for _, check := range []struct{ flag, want string }{
		{"counts", "row counts differ"},
		{"changed", "verify found differences after the drain: two.public.acct (1 differing row)"},
	} {
		res := runCLI(t, nil, append(args, "--check", check.flag)...)
		if res.Code != 1 || !strings.Contains(res.Stderr, check.want) || !strings.Contains(res.Stderr, "the source is writable again") {
			t.Fatalf("cutover --check %s with a diverged table: exit %d, want 1 saying %q and the unfence\n%s\n%s", check.flag, res.Code, check.want, res.Stdout, res.Stderr)
		}
		if got := src.QueryString("two", "current_setting('default_transaction_read_only')"); got != "off" {
			t.Errorf("source left read-only (%s) after a failed cutover", got)
		}
		if got := dst.QueryString("two", "SELECT count(*) FROM seren_replicator.held"); got == "0" {
			t.Errorf("the failed cutover put back what the migration holds; replication would then fire target triggers")
		}
	}
	src.Exec("two", `INSERT INTO hist (acct, delta) VALUES (1, 2)`)

	dst.Exec("two", `INSERT INTO acct VALUES (42, 42, NULL)`)
	// An owner and a grant init could not set: named at the hand-over.
	src.Exec("postgres", `CREATE ROLE reader`)
	dst.Exec("postgres", `CREATE ROLE reader; CREATE ROLE stranger`)
	src.Exec("two", `GRANT SELECT ON acct TO reader`)
	dst.Exec("two", `ALTER TABLE hist OWNER TO stranger`)
	res := runCLI(t, nil, args...)
	if res.Code != 0 || !strings.Contains(res.Stdout, "applied by cutover") {
		t.Fatalf("cutover after the fix: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	for _, want := range []string{`ALTER TABLE "public"."hist" OWNER TO "postgres";`, `GRANT SELECT ON TABLE "public"."acct" TO "reader";`} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("the hand-over does not name %s:\n%s", want, res.Stdout)
		}
	}
	if strings.Count(res.Stdout, " ON TABLE ")+strings.Count(res.Stdout, " OWNER TO ") != 2 {
		t.Errorf("the hand-over names more than the two differences:\n%s", res.Stdout)
	}
	assertSameTables(t, src, dst, "two", "acct", "hist", "ev")
}

// What would get through a fence is refused before anything changes: a
// prepared transaction (COMMIT PREPARED works in a read-only session), a
// role that sets read-only off for itself, and, with --fence=none, an
// application still connected.
func TestCutoverRefusesWhatGetsThroughTheFence(t *testing.T) {
	src := pgtest.Start(t, pgtest.Options{Settings: []string{"max_prepared_transactions = 5"}})
	dst := pgtest.Start(t, pgtest.Options{})
	prepareStreaming(t, src, dst, "f", cutoverSchema, "public.acct", "public.hist", "public.ev")
	args := func(extra ...string) []string {
		return append([]string{"cutover", "--yes", "--grace", "0s", "--source", src.URL("postgres", "", "f"), "--target", dst.URL("postgres", "", "f")}, extra...)
	}
	refused := func(what, want string, extra ...string) {
		t.Helper()
		res := runCLI(t, nil, args(extra...)...)
		if res.Code != 1 || !strings.Contains(res.Stderr, want) || !strings.Contains(res.Stderr, "nothing was changed") {
			t.Errorf("%s: exit %d, want 1 saying %q and that nothing changed\n%s", what, res.Code, want, res.Stderr)
		}
		if got := src.QueryString("f", "current_setting('default_transaction_read_only')"); got != "off" {
			t.Errorf("%s: the source was left read-only", what)
		}
	}
	src.Exec("f", `BEGIN; INSERT INTO acct VALUES (1, 1, NULL); PREPARE TRANSACTION 'pending_payment';`)
	refused("prepared transaction", "pending_payment")
	src.Exec("f", `ROLLBACK PREPARED 'pending_payment'`)

	src.Exec("postgres", `CREATE ROLE app LOGIN; ALTER ROLE app IN DATABASE f SET default_transaction_read_only = off`)
	refused("role override", "role(s) app set default_transaction_read_only")
	src.Exec("postgres", `ALTER ROLE app IN DATABASE f RESET default_transaction_read_only`)

	app := src.Connect("f")
	if _, err := app.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	refused("--fence=none with the application connected", "still connected", "--fence", "none")
}

// A sync daemon behind the source makes cutover wait before the fence,
// saying how far behind it is, rather than pause writes for the whole
// backlog: within --max-wait it refuses, changing nothing; with time
// enough it waits and cuts over. Ordered mode.
func TestCutoverWaitsForALaggingDaemon(t *testing.T) {
	src, dst := pgtestPair(t)
	target := prepareCutover(t, src, dst, "lag", "ordered")
	src.Exec("lag", `INSERT INTO acct SELECT g, g, NULL FROM generate_series(1, 1000) g`)
	// A backlog of many small transactions, applied one batch at a time.
	src.Exec("lag", `CREATE PROCEDURE backlog() LANGUAGE plpgsql AS $$
		BEGIN FOR i IN 1..4000 LOOP INSERT INTO hist (acct, delta) SELECT g, i FROM generate_series(1, 60) g; COMMIT; END LOOP; END$$`)
	src.Exec("lag", `CALL backlog()`)
	src.Exec("lag", `DROP PROCEDURE backlog()`)
	daemon := startSync(t, nil, "sync", "--max-batch-changes", "500", "--source", src.URL("postgres", "", "lag"), "--target", target)
	eventually(t, 30*time.Second, "the daemon streaming", func() bool { return strings.Contains(syncLog(daemon), "msg=streaming") })
	args := []string{"cutover", "--yes", "--grace", "0s", "--max-lag", "1s", "--source", src.URL("postgres", "", "lag"), "--target", target}

	res := runCLI(t, nil, append(args, "--max-wait", "300ms")...)
	if res.Code != 1 || !strings.Contains(res.Stderr, "did not come within --max-lag 1s") || !strings.Contains(res.Stderr, "nothing was changed") {
		t.Errorf("cutover with the daemon behind and --max-wait 300ms: exit %d, want 1 refusing before the fence\n%s", res.Code, res.Stderr)
	}
	if got := sourceReadOnly(src, "lag"); got != "off" {
		t.Fatalf("the refused cutover left the source read-only")
	}
	res = runCLI(t, nil, args...)
	if res.Code != 0 || !strings.Contains(res.Stderr, "waiting for the sync daemon to catch up on lag: lag ") {
		t.Fatalf("cutover with the daemon behind: exit %d, want 0 after a wait it reports\n%s\n%s\n%s", res.Code, res.Stdout, res.Stderr, syncLog(daemon))
	}
	t.Logf("cutover:\n%s%s", res.Stderr, res.Stdout)
	daemon.Process.Signal(syscall.SIGTERM)
	if err := daemon.Wait(); err != nil {
		t.Fatalf("sync: %v\n%s", err, syncLog(daemon))
	}
	assertCutoverState(t, src, dst, "lag")
}

// A sequence the target role may not set is refused in the preflight,
// before the fence, with the GRANT that fixes it; run, the cutover goes
// through and the sequence is copied. Ordered mode.
func TestCutoverRefusesASequenceItCannotCopy(t *testing.T) {
	src, dst := pgtestPair(t)
	target := prepareCutover(t, src, dst, "sq", "ordered")
	for _, c := range []*pgtest.Cluster{src, dst} {
		c.Exec("postgres", `CREATE ROLE stranger`)
		c.Exec("sq", `CREATE SEQUENCE invoice_no OWNED BY NONE; ALTER SEQUENCE invoice_no OWNER TO stranger`)
	}
	src.Exec("sq", `SELECT nextval('invoice_no') FROM generate_series(1, 42)`)
	args := []string{"cutover", "--yes", "--grace", "0s", "--source", src.URL("postgres", "", "sq"), "--target", target}
	res := runCLI(t, nil, args...)
	fix := `GRANT USAGE ON SCHEMA "public" TO "applier"; GRANT SELECT, UPDATE ON SEQUENCE "public"."invoice_no" TO "applier"`
	if res.Code != 1 || !strings.Contains(res.Stderr, "on the target "+fix) || !strings.Contains(res.Stderr, "nothing was changed") {
		t.Fatalf("cutover with a sequence the target role may not set: exit %d, want 1 naming %q\n%s", res.Code, fix, res.Stderr)
	}
	if got := sourceReadOnly(src, "sq"); got != "off" {
		t.Fatalf("the refused cutover left the source read-only")
	}
	dst.Exec("sq", fix)
	if res = runCLI(t, nil, args...); res.Code != 0 {
		t.Fatalf("cutover after the GRANT: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if got := dst.QueryString("sq", "SELECT last_value FROM invoice_no"); got != "42" {
		t.Errorf("invoice_no on the target is at %s after cutover, want 42", got)
	}
}
