package tests

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// cutover --reverse prepares the way back at the fence: once the forward
// migration is cleaned up, sync from the new server to the old one carries
// the application's writes on the new server back, exactly once through a
// kill -9 of that sync, into an old server that stays read-only for the
// application.
func TestCutoverReverse(t *testing.T) {
	old, nw := pgtestPair(t)
	prepareStreaming(t, old, nw, "rv", cutoverSchema, "public.acct", "public.hist", "public.ev")
	old.Exec("rv", `INSERT INTO acct SELECT g, g, NULL FROM generate_series(1, 50) g;
		INSERT INTO hist (acct, delta) SELECT g, 1 FROM generate_series(1, 20) g; INSERT INTO ev (v) VALUES ('a'), ('b')`)
	catchUp(t, old, nw, "rv")
	oldURL, newURL := old.URL("postgres", "", "rv"), nw.URL("postgres", "", "rv")
	if got := reverseWALCheck(t, oldURL, newURL); got != "pass" {
		t.Errorf("validate --reverse: the target's wal_level check is %q, want pass", got)
	}

	// The way back fails half-made (its checkpoint cannot be written on the
	// source): what it made on the target is removed and the source unfenced.
	old.Exec("rv", `CREATE SCHEMA seren_replicator; CREATE TABLE seren_replicator.checkpoint (slot_name text PRIMARY KEY)`)
	res := runCLI(t, nil, "cutover", "--yes", "--grace", "0s", "--reverse", "--source", oldURL, "--target", newURL)
	if res.Code != 3 || !strings.Contains(res.Stderr, "cutover step reverse") || !strings.Contains(res.Stderr, "the source is writable again") {
		t.Errorf("cutover --reverse failing at its checkpoint: exit %d, want 3 saying the source is writable again\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if got := nw.QueryString("rv", "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'seren_rv_reverse'") + nw.QueryString("rv", "SELECT count(*) FROM pg_publication"); got != "00" {
		t.Errorf("the failed way back left %s slot(s) and publication(s) on the target", got)
	}
	if got := sourceReadOnly(old, "rv"); got != "off" {
		t.Errorf("the failed cutover --reverse left the source read-only")
	}
	old.Exec("rv", `DROP SCHEMA seren_replicator CASCADE`)

	res = runCLI(t, nil, "cutover", "--yes", "--grace", "0s", "--reverse", "--source", oldURL, "--target", newURL)
	if res.Code != 0 {
		t.Fatalf("cutover --reverse: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	for _, want := range []string{"reverse", "slot seren_rv_reverse", "The way back is ready", "PGOPTIONS='-c default_transaction_read_only=off'"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("cutover --reverse output lacks %q:\n%s", want, res.Stdout)
		}
	}
	t.Logf("cutover --reverse:\n%s", res.Stdout)
	writable := []string{"PGOPTIONS=-c default_transaction_read_only=off"}
	// cleanup drops what the migration left on the fenced source without
	// PGOPTIONS.
	if cl := runCLI(t, nil, "cleanup", "--yes", "--source", oldURL, "--target", newURL); cl.Code != 0 {
		t.Fatalf("cleanup of the forward migration: exit %d\n%s\n%s", cl.Code, cl.Stdout, cl.Stderr)
	}

	// The application now writes to the new server, while sync carries its
	// changes back and is killed with SIGKILL at random moments (once here,
	// ten times in make test-long): each change reaches the old server
	// exactly once.
	w := startWorkload(t, nw, "rv", 3)
	rounds, streamed := 1, 0
	if os.Getenv("SEREN_LONG_TESTS") != "" {
		rounds = 10
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 15))
	for range rounds {
		cmd := startSync(t, writable, "sync", "--source", newURL, "--target", oldURL, "--max-retry-delay", "200ms")
		time.Sleep(time.Duration(1200+rng.IntN(1500)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if strings.Contains(syncLog(cmd), "msg=streaming") {
			streamed++
		}
	}
	if txns := w.stop(); txns < 50 || streamed == 0 {
		t.Errorf("the way back was killed %d times, %d of them while streaming, under %d workload transactions: the test proved little", rounds, streamed, txns)
	}
	nw.Exec("rv", `INSERT INTO acct VALUES (1000, 5, 'new'); UPDATE acct SET bal = bal + 100 WHERE id <= 10;
		DELETE FROM hist WHERE id <= 5; INSERT INTO ev (v) VALUES ('c'), ('d'); INSERT INTO hist (acct, delta) VALUES (1000, 7)`)
	back := runCLI(t, writable, "sync", "--catch-up", "--source", newURL, "--target", oldURL)
	if back.Code != 0 {
		t.Fatalf("sync back to the old server: exit %d\n%s\n%s", back.Code, back.Stdout, back.Stderr)
	}
	assertSameTables(t, nw, old, "rv", "acct", "hist", "ev")
	for _, tbl := range []string{"acct", "hist", "ev"} {
		if n, o := rowsMD5(nw, "rv", tbl), rowsMD5(old, "rv", tbl); n != o {
			t.Errorf("table %s on the old server %s, on the new one %s (count:md5 of rows)", tbl, o, n)
		}
	}
	if got := sourceReadOnly(old, "rv"); got != "on" {
		t.Errorf("the old server is read-only = %s for the application during the way back, want on", got)
	}
	if behind := old.QueryString("rv", "SELECT last_value < $1::bigint FROM ev_id_seq", nw.QueryString("rv", "SELECT last_value FROM ev_id_seq")); behind != "false" {
		t.Errorf("ev_id_seq on the old server is behind the new one's after sync")
	}

	// Rolling back is a second cutover, the other way. The old server is
	// read-only: without PGOPTIONS cutover refuses before changing anything.
	nw.Exec("rv", `UPDATE acct SET note = 'late' WHERE id = 1000; INSERT INTO ev (v) VALUES ('e')`)
	res = runCLI(t, nil, "cutover", "--yes", "--grace", "0s", "--source", newURL, "--target", oldURL)
	if res.Code != 1 || !strings.Contains(res.Stderr, "is read-only for new sessions") || !strings.Contains(res.Stderr, "nothing was changed") {
		t.Errorf("rollback without PGOPTIONS: exit %d, want 1 saying the target is read-only\n%s", res.Code, res.Stderr)
	}
	res = runCLI(t, writable, "cutover", "--yes", "--grace", "0s", "--source", newURL, "--target", oldURL)
	if res.Code != 0 || !strings.Contains(res.Stdout, "target rv writable again") {
		t.Fatalf("rollback cutover: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("rollback:\n%s", res.Stdout)
	assertSameTables(t, nw, old, "rv", "acct", "hist", "ev")
	if got := sourceReadOnly(old, "rv") + sourceReadOnly(nw, "rv"); got != "offon" {
		t.Errorf("after the rollback the old server is read-only = %s, the new one %s; want off, on", got[:len(got)-2], got[len(got)-2:])
	}
	if behind := old.QueryString("rv", "SELECT last_value < $1::bigint FROM ev_id_seq", nw.QueryString("rv", "SELECT last_value FROM ev_id_seq")); behind != "false" {
		t.Errorf("ev_id_seq on the old server is behind the new one's after the rollback")
	}
	old.Exec("rv", `INSERT INTO ev (v) VALUES ('back on the old server')`)

	// A target that cannot be the source of the way back is refused
	// before anything changes.
	replica := pgtest.Start(t, pgtest.Options{Settings: []string{"wal_level = replica"}})
	prepareStreaming(t, old, replica, "rw", cutoverSchema, "public.acct", "public.hist", "public.ev")
	if got := reverseWALCheck(t, old.URL("postgres", "", "rw"), replica.URL("postgres", "", "rw")); got != "fail" {
		t.Errorf("validate --reverse against a target with wal_level = replica: the wal_level check is %q, want fail", got)
	}
	res = runCLI(t, nil, "cutover", "--yes", "--grace", "0s", "--reverse", "--source", old.URL("postgres", "", "rw"), "--target", replica.URL("postgres", "", "rw"))
	if res.Code != 1 || !strings.Contains(res.Stderr, "wal_level is replica on the target") || !strings.Contains(res.Stderr, "nothing was changed") {
		t.Errorf("cutover --reverse to a target without logical WAL: exit %d, want 1 naming wal_level\n%s", res.Code, res.Stderr)
	}
	if got := sourceReadOnly(old, "rw"); got != "off" {
		t.Errorf("the refused cutover left the source read-only")
	}
}

// reverseWALCheck runs validate --reverse --json and returns the status of
// its check of the target's wal_level.
func reverseWALCheck(t *testing.T, src, dst string) string {
	t.Helper()
	res := runCLI(t, nil, "validate", "--reverse", "--json", "--source", src, "--target", dst)
	var rep struct {
		Checks []struct{ Name, Status string }
	}
	if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil {
		t.Fatalf("validate --reverse --json: exit %d: %v\n%s\n%s", res.Code, err, res.Stdout, res.Stderr)
	}
	for _, c := range rep.Checks {
		if c.Name == "reverse: target wal_level" {
			return c.Status
		}
	}
	t.Errorf("validate --reverse has no check of the target's wal_level:\n%s", res.Stdout)
	return ""
}
