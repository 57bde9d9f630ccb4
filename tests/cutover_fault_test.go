package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The source's connections are cut while cutover drains (no daemon:
// cutover's own catch-up streams from the source, through a proxy that
// resets every connection every few milliseconds for 4 s, longer than
// --max-wait). The drain cannot reach the fence; cutover unfences the
// source once it answers again and says so, the application writes again,
// and a cutover run again carries every write. In both apply modes.
func TestCutoverSourceCutMidDrain(t *testing.T) {
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) { testCutoverSourceCutMidDrain(t, mode) })
	}
}

func testCutoverSourceCutMidDrain(t *testing.T, mode string) {
	src, dst := pgtestPair(t)
	target := prepareCutover(t, src, dst, "md", mode)
	proxy := startProxy(t, fmt.Sprintf("127.0.0.1:%d", src.Port))
	args := []string{"cutover", "--yes", "--grace", "0s", "--max-wait", "3s", "--source", proxy.URL("md"), "--target", target}
	w := startWorkload(t, src, "md", 2)
	time.Sleep(time.Second)

	cmd := startSync(t, nil, args...)
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(syncLog(cmd), "step=fence") {
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			t.Fatalf("cutover did not reach the drain:\n%s", syncLog(cmd))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		proxy.Reset()
	}
	err := cmd.Wait()
	out := syncLog(cmd)
	if code := cmd.ProcessState.ExitCode(); err == nil || code == 4 || !strings.Contains(out, "cutover step drain") || !strings.Contains(out, "the source is writable again") {
		t.Errorf("cutover with the source cut mid-drain: exit %d, want a failure of the drain saying the source is writable again\n%s", code, out)
	}
	if got := sourceReadOnly(src, "md"); got != "off" {
		t.Fatalf("the source was left read-only after the drain failed")
	}
	// The application writes again, and the migration goes on.
	committed := func() int { w.mu.Lock(); defer w.mu.Unlock(); return w.txns }
	before := committed()
	eventually(t, 10*time.Second, "the workload to write again", func() bool { return committed() > before+10 })

	res := runCLI(t, nil, args...)
	txns := w.stop()
	if res.Code != 0 {
		t.Fatalf("cutover run again: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Logf("%d workload transactions; first cutover:\n%s\nagain:\n%s", txns, out, res.Stdout)
	assertCutoverState(t, src, dst, "md")
}
