package tests

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// Network resets of every connection on one side in the middle of init's
// COPY. Init either retries the lost copy sessions in the same snapshot and
// finishes, or (the connection holding the snapshot, or its main session,
// went) fails with one line, drops the target database it created, and a
// second init succeeds. Either way the data ends equal.
func TestInitSurvivesNetworkResetsMidCopy(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE big")
	src.Exec("big", `CREATE TABLE t (id int PRIMARY KEY, pad text);
		INSERT INTO t SELECT i, repeat(md5(i::text), 3) FROM generate_series(1, 100000) i`)
	srcProxy := startProxy(t, fmt.Sprintf("127.0.0.1:%d", src.Port))
	dstProxy := startProxy(t, fmt.Sprintf("127.0.0.1:%d", dst.Port))
	args := []string{"init", "--yes", "--jobs", "1", "--chunk-bytes", "131072",
		"--source", srcProxy.URL("big"), "--target", dstProxy.URL("big")}

	copying := func(c *pgtest.Cluster) func() bool {
		conn := c.Connect("postgres")
		return func() bool {
			var n int
			err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY %' AND pid <> pg_backend_pid()`).Scan(&n)
			return err == nil && n > 0
		}
	}
	run := func(reset func(), when func() bool) (string, error) {
		cmd := exec.Command(binary, args...)
		cmd.Env = cleanEnv()
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if reset != nil {
			initWaitFor(t, 2*time.Minute, "a COPY to reset", when)
			reset()
		}
		select {
		case err := <-done:
			return out.String(), err
		case <-time.After(3 * time.Minute):
			cmd.Process.Kill()
			t.Fatalf("init did not finish:\n%s", out.String())
			return "", nil
		}
	}

	for _, side := range []struct {
		name  string
		proxy *faultProxy
		c     *pgtest.Cluster
	}{{"source", srcProxy, src}, {"target", dstProxy, dst}} {
		out, err := run(side.proxy.Reset, copying(side.c))
		switch {
		case err == nil:
			// Only the copy sessions were cut, and they were retried.
			if !strings.Contains(out, "retrying in the same snapshot") {
				t.Errorf("%s reset: init succeeded without saying it retried:\n%s", side.name, out)
			}
		case strings.Count(strings.TrimSpace(lastErrorLine(out)), "\n") != 0:
			t.Errorf("%s reset: want one error line, got:\n%s", side.name, out)
		default:
			if got := dst.QueryString("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'big'"); got != "0" {
				t.Errorf("%s reset: a failed init left the target database it created behind:\n%s", side.name, out)
			}
			if out, err = run(nil, nil); err != nil {
				t.Fatalf("init again after the %s reset: %v\n%s", side.name, err, out)
			}
		}
		assertSameRows(t, src, dst, "big", "big", []string{"t"})
		t.Logf("%s reset mid-copy: first init %v", side.name, err)
		dst.Exec("postgres", "DROP DATABASE big WITH (FORCE)")
		src.Exec("big", "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots; DROP PUBLICATION IF EXISTS seren_big_pub")
	}
}

// lastErrorLine returns the output from the last "error:" on.
func lastErrorLine(out string) string {
	if i := strings.LastIndex(out, "error:"); i >= 0 {
		return out[i:]
	}
	return ""
}
