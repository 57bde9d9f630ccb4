package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// Heartbeat timing: the source row is updated every heartbeatEvery, the
// target polled every pollEvery (so a lag is overstated by at most that).
const (
	heartbeatEvery = 100 * time.Millisecond
	pollEvery      = 2 * time.Millisecond
)

// steadyState (issue 7 item 4): the source under pgbench -R rate for
// b.steady, applied by the native subscription (enabled, running), then by
// our sync daemon; lag measured with a heartbeat row. Native runs first so
// that our daemon, not the native worker, drains the slot backlog the other
// run leaves (both are waited out before measuring).
func (b *bench) steadyState() {
	src, ours, native := b.start(), b.start(), b.start()
	tables := append(slices.Clone(pgbenchTables), "heartbeat")
	b.prepare(src, ours, native, tables, `CREATE TABLE heartbeat (id int PRIMARY KEY, ts timestamptz NOT NULL);
INSERT INTO heartbeat VALUES (1, clock_timestamp());`)
	section := fmt.Sprintf("steady %d tps", b.rate)

	native.Exec(benchDB, "ALTER SUBSCRIPTION native_sub ENABLE")
	nativeLag, nativeRun := b.measureLag(src, native)
	native.Exec(benchDB, "ALTER SUBSCRIPTION native_sub DISABLE")

	d := b.startDaemon(src, ours)
	oursLag, oursRun := b.measureLag(src, ours)
	if out, err := d.stop(); err != nil {
		b.h.Fatalf("sync daemon: %v\n%s", err, out)
	}

	for i, p := range []struct {
		name string
		q    float64
	}{{"lag p50", 0.50}, {"lag p99", 0.99}, {"lag max", 1}} {
		r := row{section: section, what: p.name, ours: quantile(oursLag, p.q), native: quantile(nativeLag, p.q)}
		switch i {
		case 0:
			r.note = fmt.Sprintf("%d / %d heartbeats over %s; goal: ours <= 2x native + 1ms", len(oursLag), len(nativeLag), b.steady)
		case 1:
			r.note = "goal: ours <= 1.2x native (ratio >= 0.83)"
		}
		b.rows = append(b.rows, r)
	}
	b.details = append(b.details, fmt.Sprintf("steady state: pgbench -R %d -T %d -c 4 -j 2; heartbeat every %s, target polled every %s\nnative run: %s\nours run:   %s",
		b.rate, int(b.steady.Seconds()), heartbeatEvery, pollEvery, nativeRun, oursRun))
}

// daemon is a running `sync` without --catch-up.
type daemon struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

func (b *bench) startDaemon(src, dst *pgtest.Cluster) *daemon {
	args := append([]string{"sync", "--source", src.DSN(benchDB), "--target", dst.DSN(benchDB), "--log-level", "warn"}, strings.Fields(b.syncArgs)...)
	d := &daemon{cmd: exec.Command(b.bin, args...), done: make(chan error, 1)}
	d.cmd.Stdout, d.cmd.Stderr = &d.out, &d.out
	if err := d.cmd.Start(); err != nil {
		b.h.Fatalf("start sync daemon: %v", err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	b.h.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
		}
	})
	return d
}

// stop ends the daemon with SIGTERM, as systemd would, and returns its
// output; an exit other than a clean one is an error.
func (d *daemon) stop() (string, error) {
	select {
	case err := <-d.done: // died early
		return d.out.String(), fmt.Errorf("exited before it was stopped: %v", err)
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		return d.out.String(), err
	case <-time.After(time.Minute):
		_ = d.cmd.Process.Kill()
		return d.out.String(), errors.New("did not stop within a minute of SIGTERM")
	}
}

// measureLag waits until dst applies a fresh heartbeat (the applier has
// drained any backlog), then runs pgbench at b.rate for b.steady while a
// heartbeat is written on src every heartbeatEvery, and returns the lag of
// each heartbeat (the time it became visible on dst minus the source
// timestamp it carries) and pgbench's summary.
func (b *bench) measureLag(src, dst *pgtest.Cluster) ([]time.Duration, string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srcConn, err := pgx.Connect(ctx, src.DSN(benchDB))
	if err != nil {
		b.h.Fatal(err)
	}
	defer srcConn.Close(context.Background())
	dstConn, err := pgx.Connect(ctx, dst.DSN(benchDB))
	if err != nil {
		b.h.Fatal(err)
	}
	defer dstConn.Close(context.Background())

	beat := func() (time.Time, error) {
		var ts time.Time
		err := srcConn.QueryRow(ctx, "UPDATE heartbeat SET ts = clock_timestamp() WHERE id = 1 RETURNING ts").Scan(&ts)
		return ts, err
	}
	seen := func() (time.Time, error) {
		var ts time.Time
		err := dstConn.QueryRow(ctx, "SELECT ts FROM heartbeat WHERE id = 1").Scan(&ts)
		return ts, err
	}
	first, err := beat()
	if err != nil {
		b.h.Fatalf("heartbeat: %v", err)
	}
	b.waitUntil("the applier to catch up", func() bool {
		ts, err := seen()
		return err == nil && !ts.Before(first)
	})

	var (
		mu    sync.Mutex
		sent  []time.Time // heartbeats not yet seen on dst, oldest first
		lags  []time.Duration
		at    []time.Time // when each of lags was sent
		final time.Time
	)
	writing, stopWriting := context.WithCancel(ctx)
	var g errgroup.Group
	g.Go(func() error { // heartbeat writer
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-writing.Done():
				return nil
			case <-t.C:
			}
			ts, err := beat()
			if err != nil {
				return fmt.Errorf("heartbeat: %w", err)
			}
			mu.Lock()
			sent = append(sent, ts)
			final = ts
			mu.Unlock()
		}
	})
	g.Go(func() error { // target poller
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		deadline := time.Time{}
		for range t.C {
			ts, err := seen()
			if err != nil {
				return fmt.Errorf("read target heartbeat: %w", err)
			}
			now := time.Now()
			mu.Lock()
			// Every heartbeat up to the one visible is applied now, also
			// those a batch applied together and the poll never saw alone.
			for len(sent) > 0 && !sent[0].After(ts) {
				lags = append(lags, now.Sub(sent[0]))
				at = append(at, sent[0])
				sent = sent[1:]
			}
			done := writing.Err() != nil && len(sent) == 0 && !ts.Before(final)
			mu.Unlock()
			if done {
				return nil
			}
			if writing.Err() != nil {
				if deadline.IsZero() {
					deadline = now.Add(2 * time.Minute)
				} else if now.After(deadline) {
					return errors.New("the last heartbeats did not reach the target within 2 minutes")
				}
			}
		}
		return nil
	})
	out, pgbenchErr := b.run(fmt.Sprintf("pgbench -n -R %d -T %d -c 4 -j 2 '%s' 2>&1", b.rate, int(b.steady.Seconds()), src.DSN(benchDB)))
	stopWriting()
	if err := g.Wait(); err != nil {
		b.h.Fatalf("measure lag: %v", err)
	}
	if pgbenchErr != nil {
		b.h.Fatalf("pgbench: %v\n%s", pgbenchErr, out)
	}
	var summary []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "tps") || strings.Contains(l, "processed") || strings.Contains(l, "rate limit schedule lag") {
			summary = append(summary, strings.TrimSpace(l))
		}
	}
	fmt.Fprintf(os.Stderr, "steady: %d heartbeats, p50 %s p99 %s max %s (worst: %s); %s\n", len(lags),
		fmtDur(quantile(lags, 0.5)), fmtDur(quantile(lags, 0.99)), fmtDur(quantile(lags, 1)), worst(lags, at, 5), strings.Join(summary, "; "))
	return lags, strings.Join(summary, "; ")
}

// run is sh returning the error instead of ending the run, for callers
// that must stop their goroutines first.
func (b *bench) run(script string) (string, error) {
	cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
	cmd.Env = append(os.Environ(), "PATH=/usr/lib/postgresql/15/bin:"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// quantile is the q-th quantile (nearest rank) of ds; 0 when empty.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// worst lists the n largest lags with the second of the run (counted from
// the first heartbeat) at which each heartbeat was written, to tell a
// periodic stall from scattered ones.
func worst(lags []time.Duration, at []time.Time, n int) string {
	if len(lags) == 0 {
		return ""
	}
	idx := make([]int, len(lags))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(lags[b], lags[a]) })
	var parts []string
	for _, i := range idx[:min(n, len(idx))] {
		parts = append(parts, fmt.Sprintf("%s at %.1fs", fmtDur(lags[i]), at[i].Sub(at[0]).Seconds()))
	}
	return strings.Join(parts, ", ")
}
