package tests

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// stormDuration is how long the fault storm runs: short in make test,
// a minute in make test-long, SEREN_SOAK_DURATION (for example 30m) in make
// soak.
func stormDuration(t *testing.T) (time.Duration, bool) {
	if v := os.Getenv("SEREN_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SEREN_SOAK_DURATION: %v", err)
		}
		return d, true
	}
	if os.Getenv("SEREN_LONG_TESTS") != "" {
		return time.Minute, false
	}
	return 15 * time.Second, false
}

// A sync daemon under a write workload, through proxies on both sides,
// while faults rain on it: connections reset on either side, the source
// connection black-holed, kill -9 and SIGTERM with restarts, a second
// daemon started on the same migration, and (in the soak) restarts of
// either server. The target ends equal to the source row for row, in both
// apply modes.
func TestSyncFaultStorm(t *testing.T) {
	for _, mode := range []string{"replica", "ordered"} {
		t.Run(mode, func(t *testing.T) { faultStorm(t, mode) })
	}
}

func faultStorm(t *testing.T, mode string) {
	duration, soak := stormDuration(t)
	// Without server restarts the source never ends a walsender on its own,
	// so only sync's receive timeout can notice a black hole. A restart
	// needs it: a fast shutdown waits for every walsender's client to
	// confirm the end of WAL, forever for a black-holed one.
	senderTimeout := "wal_sender_timeout = 0"
	if soak {
		senderTimeout = "wal_sender_timeout = '10s'"
	}
	src := pgtest.Start(t, pgtest.Options{Settings: []string{senderTimeout}})
	dst := pgtest.Start(t, pgtest.Options{})
	prepareStreaming(t, src, dst, "bank", workloadSchema, "public.acct", "public.hist")
	targetUser, targetPassword := "postgres", ""
	if mode == "ordered" {
		targetUser, targetPassword = "applier", "applier-pw"
		dst.CreateRole(targetUser, targetPassword)
		dst.Exec("bank", `GRANT USAGE, CREATE ON SCHEMA public, seren_replicator TO applier;
			GRANT ALL ON ALL TABLES IN SCHEMA seren_replicator TO applier;
			ALTER TABLE acct OWNER TO applier; ALTER TABLE hist OWNER TO applier;`)
	}
	srcProxy := startProxy(t, fmt.Sprintf("127.0.0.1:%d", src.Port))
	dstProxy := startProxy(t, fmt.Sprintf("127.0.0.1:%d", dst.Port))
	target := fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/bank?sslmode=disable", targetUser, targetPassword, dstProxy.Port())
	args := []string{"sync", "--source", srcProxy.URL("bank"), "--target", target,
		"--receive-timeout", "3s", "--status-interval", "1s", "--max-retry-delay", "500ms"}

	w := startWorkload(t, src, "bank", 3)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	faults := map[string]int{}
	daemon := startSync(t, nil, args...)
	restart := func() { daemon = startSync(t, nil, args...) }
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		kinds := []string{"reset source", "reset target", "black-hole source", "kill -9", "SIGTERM", "second daemon"}
		if soak {
			kinds = append(kinds, "restart source", "restart target")
		}
		kind := kinds[rng.IntN(len(kinds))]
		faults[kind]++
		switch kind {
		case "reset source":
			srcProxy.Reset()
		case "reset target":
			dstProxy.Reset()
		case "black-hole source":
			srcProxy.BlackholeExisting()
		case "kill -9":
			daemon.Process.Signal(syscall.SIGKILL)
			daemon.Wait()
			restart()
		case "SIGTERM":
			eventually(t, 60*time.Second, "the daemon streaming", func() bool { return strings.Contains(syncLog(daemon), "msg=streaming") })
			daemon.Process.Signal(syscall.SIGTERM)
			if err := waitExit(daemon, 45*time.Second); err != nil {
				t.Fatalf("sync after SIGTERM: %v\n%s", err, syncLog(daemon))
			}
			restart()
		case "second daemon":
			// It refuses at once when the first holds the writer lock; while
			// the first is between connections it may win the lock instead,
			// and then the first waits. Either way only one writes.
			second := startSync(t, nil, args...)
			if err := waitExit(second, 20*time.Second); err == nil {
				t.Fatalf("a second sync on a running migration exited 0:\n%s", syncLog(second))
			} else if !strings.Contains(syncLog(second), "another process is applying this migration") {
				faults["second daemon won the lock"]++
				t.Logf("second daemon: %v\n%s", err, syncLog(second))
				second.Process.Signal(syscall.SIGTERM)
				waitExit(second, 45*time.Second)
			}
		case "restart source":
			src.Restart()
		case "restart target":
			dst.Restart()
		}
	}
	txns := w.stop()
	// A daemon restarted a moment ago may not handle signals yet.
	eventually(t, 60*time.Second, "the last daemon streaming", func() bool { return strings.Contains(syncLog(daemon), "msg=streaming") })
	daemon.Process.Signal(syscall.SIGTERM)
	if err := waitExit(daemon, 45*time.Second); err != nil {
		t.Errorf("sync after SIGTERM: %v\n%s", err, syncLog(daemon))
	}
	res := runCLI(t, nil, "sync", "--catch-up", "--source", src.URL("postgres", "", "bank"), "--target", dst.URL(targetUser, targetPassword, "bank"))
	if res.Code != 0 {
		t.Fatalf("final catch-up: exit %d\n%s", res.Code, res.Stderr)
	}
	compared, lost, extra := 0, 0, 0
	for _, table := range workloadTables {
		n, l, e := rowDiff(tableContents(t, src, "bank", table), tableContents(t, dst, "bank", table))
		compared, lost, extra = compared+n, lost+l, extra+e
	}
	t.Logf("fault storm (%s mode, %s): %d workload transactions; faults injected %v; %d rows compared: %d lost, %d extra or duplicated",
		mode, duration, txns, faults, compared, lost, extra)
	if lost+extra > 0 {
		assertSameTables(t, src, dst, "bank", workloadTables...)
	}
	if txns < 50 {
		t.Fatalf("workload committed only %d transactions: the storm proved little", txns)
	}
}

// waitExit waits for a background sync to exit, killing it after limit.
func waitExit(cmd *exec.Cmd, limit time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("still running after %s (killed)", limit)
	}
}

// rowDiff compares two tables' rows (one per line) as multisets: how many
// source rows there are, how many the target lacks, and how many it has
// beyond the source's (extra or duplicated).
func rowDiff(source, target string) (rows, lost, extra int) {
	count := map[string]int{}
	for _, r := range strings.Split(source, "\n") {
		if r != "" {
			count[r]++
			rows++
		}
	}
	for _, r := range strings.Split(target, "\n") {
		if r != "" {
			count[r]--
		}
	}
	for _, n := range count {
		if n > 0 {
			lost += n
		} else {
			extra -= n
		}
	}
	return rows, lost, extra
}
