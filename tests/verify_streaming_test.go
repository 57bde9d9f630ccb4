package tests

import (
	"encoding/json"
	"syscall"
	"testing"
	"time"
)

// verify while sync streams a steady write workload reports no false
// mismatch: each range is compared once the target has applied what the
// source range saw.
func TestVerifyWhileSyncStreams(t *testing.T) {
	src, dst := pgtestPair(t)
	prepareStreaming(t, src, dst, "bank", workloadSchema, "public.acct", "public.hist")
	// Some rows to compare before the workload starts.
	src.Exec("bank", `INSERT INTO hist (acct, delta) SELECT 1 + g % 200, g % 7 FROM generate_series(1, 100000) g`)
	cmd := startSync(t, nil, syncArgs(src, dst, "bank")...)
	eventually(t, 60*time.Second, "initial rows to arrive", func() bool {
		return dst.QueryString("bank", "SELECT count(*) FROM hist") == "100000"
	})
	w := startWorkload(t, src, "bank", 3)
	defer w.stop()
	for round := 0; round < 3; round++ {
		res := runCLI(t, nil, "verify", "--json", "--chunk-rows", "20000", "--source", src.URL("postgres", "", "bank"), "--target", dst.URL("postgres", "", "bank"))
		var report struct {
			Databases []struct {
				Tables []struct {
					Table  string `json:"table"`
					Status string `json:"status"`
				} `json:"tables"`
			} `json:"databases"`
		}
		if err := json.Unmarshal([]byte(res.Stdout), &report); err != nil {
			t.Fatalf("round %d: verify output is not JSON (exit %d): %v\n%s\n%s", round, res.Code, err, res.Stdout, res.Stderr)
		}
		if res.Code != 0 {
			t.Fatalf("round %d: verify reported a mismatch while sync streamed (exit %d):\n%s\n%s", round, res.Code, res.Stdout, res.Stderr)
		}
		checked := 0
		for _, d := range report.Databases {
			for _, tb := range d.Tables {
				checked++
				if tb.Status != "match" {
					t.Errorf("round %d: %s is %s", round, tb.Table, tb.Status)
				}
			}
		}
		if checked != 2 {
			t.Fatalf("round %d: verify checked %d tables, want 2:\n%s", round, checked, res.Stdout)
		}
	}
	if n := w.stop(); n < 50 {
		t.Fatalf("workload committed only %d transactions during verify", n)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}
