package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// TestInitInterruptedThenRerun stops init mid-copy, once with SIGINT and once
// with SIGKILL, and runs it again: the re-run must notice the unfinished
// init, start over cleanly and end with a complete, correct copy.
func TestInitInterruptedThenRerun(t *testing.T) {
	rows := 150000
	if os.Getenv("SEREN_LONG_TESTS") != "" {
		rows = 1000000
	}
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE big")
	src.Exec("big", fmt.Sprintf(`CREATE TABLE t (id int PRIMARY KEY, pad text);
		INSERT INTO t SELECT i, repeat(md5(i::text), 3) FROM generate_series(1, %d) i;
		CREATE TABLE small (id int PRIMARY KEY); INSERT INTO small SELECT generate_series(1, 100)`, rows))
	dst.Exec("postgres", "CREATE DATABASE big")
	tables := []string{"t", "small"}
	// Many small pieces, one job: the copy lasts long enough to interrupt.
	args := initArgs(src, dst, "big", "big", "--jobs", "1", "--chunk-bytes", "262144")

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			first := append([]string{}, args...)
			if sig == syscall.SIGKILL {
				first = append(first, "--drop-existing") // the SIGINT round completed
			}
			cmd := exec.Command(binary, first...)
			cmd.Env = cleanEnv()
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			conn := dst.Connect("big")
			initWaitFor(t, 2*time.Minute, "a copied piece", func() bool {
				// Errors are expected while the target is being reset.
				var fresh, copying bool
				err := conn.QueryRow(context.Background(), `SELECT to_regclass('seren_replicator.checkpoint') IS NULL`).Scan(&fresh)
				if err != nil || !fresh {
					return false
				}
				err = conn.QueryRow(context.Background(), `SELECT count(*) > 1 FROM seren_replicator.init_progress WHERE piece <> ''`).Scan(&copying)
				return err == nil && copying
			})
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			if err == nil {
				t.Fatalf("init finished before the %s arrived: make the copy longer\n%s", sig, stderr.String())
			}
			t.Logf("interrupted: %v\n%s", err, lastLines(stderr.String(), 5))
			if dst.QueryString("big", `SELECT count(*) FROM pg_tables WHERE schemaname = 'seren_replicator' AND tablename = 'checkpoint'`) != "0" {
				t.Fatalf("an interrupted init wrote its checkpoint")
			}
			slots := src.QueryString("big", `SELECT count(*) FROM pg_replication_slots`)
			if sig == syscall.SIGINT && slots != "0" {
				t.Errorf("SIGINT left %s slots behind", slots)
			}
			if sig == syscall.SIGKILL && slots != "1" {
				t.Errorf("after SIGKILL %s slots, want the stale one", slots)
			}

			res := runCLI(t, nil, args...)
			if res.Code != 0 {
				t.Fatalf("re-run exit code %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
			}
			if !strings.Contains(res.Stderr, "did not finish") {
				t.Errorf("the re-run does not say it found an unfinished init:\n%s", res.Stderr)
			}
			assertSameRows(t, src, dst, "big", "big", tables)
			if got := dst.QueryString("big", `SELECT count(*) FROM pg_indexes WHERE tablename = 't'`); got != "1" {
				t.Errorf("t has %s indexes, want its primary key", got)
			}
			if got := src.QueryString("big", `SELECT count(*) FROM pg_replication_slots`); got != "1" {
				t.Errorf("%s slots after the re-run, want 1", got)
			}
		})
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestInitRetriesLostSessions terminates the copy's sessions on both servers
// mid-copy: the workers reconnect, import the same snapshot again (its
// replication connection is still open) and finish without starting over.
func TestInitRetriesLostSessions(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	src.Exec("postgres", "CREATE DATABASE big")
	src.Exec("big", `CREATE TABLE t (id int PRIMARY KEY, pad text);
		INSERT INTO t SELECT i, repeat(md5(i::text), 3) FROM generate_series(1, 100000) i`)
	dst.Exec("postgres", "CREATE DATABASE big")
	cmd := exec.Command(binary, initArgs(src, dst, "big", "big", "--jobs", "1", "--chunk-bytes", "131072")...)
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for _, c := range []*pgtest.Cluster{dst, src} {
		conn := c.Connect("big")
		initWaitFor(t, 2*time.Minute, "a COPY session to terminate", func() bool {
			var n int
			err := conn.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE query LIKE 'COPY %' AND pid <> pg_backend_pid()`).Scan(&n)
			return err == nil && n > 0
		})
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("init failed after its sessions were terminated: %v\n%s", err, out.String())
		}
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("init did not finish:\n%s", out.String())
	}
	if got := strings.Count(out.String(), "retrying in the same snapshot"); got < 2 {
		t.Errorf("%d retries reported, want 2:\n%s", got, out.String())
	}
	assertSameRows(t, src, dst, "big", "big", []string{"t"})
}
