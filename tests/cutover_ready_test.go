package tests

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// "Watch status until the lag is 0, then repoint the application" must not
// lose sequence values: while the target's sequences are behind, status says
// the migration is not ready for cutover and why; a clean stop of the daemon
// copies them, and status then says it is ready.
func TestStatusSaysWhenCutoverWouldLoseSequences(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "seqs", `CREATE TABLE t (id serial PRIMARY KEY, v text);`, "public.t")
	cmd := startSync(t, nil, syncArgs(src, dst, "seqs", "--sequence-interval", "0")...)
	src.Exec("seqs", `INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 675)`)
	var r statusReport
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last status: %+v\nsync log:\n%s", r, syncLog(cmd))
		}
	})
	eventually(t, 30*time.Second, "caught up", func() bool {
		r, _ = statusJSON(t, src, dst, "seqs")
		return r.Pending != nil && !*r.Pending && r.SlotActive
	})
	if r.Verdict != "healthy" || r.ReadyForCutover || !strings.Contains(r.NotReadyBecause, "1 sequence is behind") ||
		!strings.Contains(r.Reason, "not ready for cutover") {
		t.Errorf("caught up with the sequence 675 behind: %s: %s, ready %v (%s)", r.Verdict, r.Reason, r.ReadyForCutover, r.NotReadyBecause)
	}
	human := runCLI(t, nil, statusArgs(src, dst, "seqs")...)
	if !strings.Contains(human.Stdout, "not ready for cutover") {
		t.Errorf("status output does not say it is not ready for cutover:\n%s", human.Stdout)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sync: %v\n%s", err, syncLog(cmd))
	}
	r, _ = statusJSON(t, src, dst, "seqs")
	if !r.ReadyForCutover || len(r.SequencesBehind) != 0 || !strings.Contains(r.Reason, "ready for cutover") {
		t.Errorf("after a clean stop: %s: %s, ready %v (%s), sequences behind %q", r.Verdict, r.Reason, r.ReadyForCutover, r.NotReadyBecause, r.SequencesBehind)
	}
	if s, d := src.QueryString("seqs", "SELECT last_value FROM t_id_seq"), dst.QueryString("seqs", "SELECT last_value FROM t_id_seq"); s != d {
		t.Errorf("sequence on the target %s, source %s", d, s)
	}
}
