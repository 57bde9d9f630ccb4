package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// cutoverLoadFor is how long pgbench runs at b.rate before each cutover,
// with the sync daemon applying.
const cutoverLoadFor = 10 * time.Second

// cutoverPause (issue 15): the write pause of a cutover under pgbench at
// b.rate tps on scale b.scale, with the sync daemon running. Ours is the
// pause `cutover --json` reports (from the fence to the hand-over), with
// --check changed (the default: verify before the fence, the rows written
// since compared at it) and with --check verify (every row at the fence);
// the other is the
// manual procedure timed the same way, from the fence to the end of
// verify: ALTER DATABASE … default_transaction_read_only = on and
// pg_terminate_backend of the sessions, SIGTERM to the daemon, sync
// --catch-up (drains to the current position and copies the sequences),
// verify. Between the runs the source is made writable again and the
// daemon, still running, goes on from the fence.
func (b *bench) cutoverPause() {
	src, dst := b.start(), b.start()
	for _, c := range []*pgtest.Cluster{src, dst} {
		c.Exec("postgres", "CREATE DATABASE "+benchDB)
	}
	b.sh(fmt.Sprintf("pgbench -q -i -s %d '%s' 2>&1 | tail -1", b.scale, src.DSN(benchDB)))
	b.sh(fmt.Sprintf("%s init --yes --replica-identity-full --log-level warn --source '%s' --target '%s'", b.bin, src.DSN(benchDB), dst.DSN(benchDB)))
	section := fmt.Sprintf("cutover %d tps", b.rate)
	d := b.startDaemon(src, dst)

	type cut struct {
		WritePause float64 `json:"write_pause_seconds"`
		Steps      []struct {
			Step    string  `json:"step"`
			Seconds float64 `json:"seconds"`
		} `json:"steps"`
	}
	ours := func(check string) (time.Duration, string) {
		load := b.cutoverLoad(src)
		out := b.sh(fmt.Sprintf("%s cutover --yes --json --grace 0s --check %s --log-level warn --source '%s' --target '%s'", b.bin, check, src.DSN(benchDB), dst.DSN(benchDB)))
		summary := load()
		var c cut
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &c); err != nil {
			b.h.Fatalf("cutover --json: %v\n%s", err, out)
		}
		var steps []string
		for _, s := range c.Steps {
			steps = append(steps, fmt.Sprintf("%s %s", s.Step, fmtDur(seconds(s.Seconds))))
		}
		// The source goes back to the application; the daemon goes on.
		src.Exec("postgres", "ALTER DATABASE "+benchDB+" RESET default_transaction_read_only")
		return seconds(c.WritePause), fmt.Sprintf("ours, --check %s: %s; %s", check, strings.Join(steps, ", "), summary)
	}
	changed, changedDetail := ours("changed")
	verified, verifiedDetail := ours("verify")

	// The manual procedure, timed from the fence to the end of verify.
	load := b.cutoverLoad(src)
	var manual []string
	start := time.Now()
	lap := func(what string) {
		manual = append(manual, fmt.Sprintf("%s %s", what, fmtDur(time.Since(start))))
	}
	src.Exec("postgres", "ALTER DATABASE "+benchDB+" SET default_transaction_read_only = on")
	src.Exec(benchDB, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
		AND backend_type = 'client backend' AND application_name NOT LIKE 'postgres-seren-replicator%'`)
	lap("fenced")
	if out, err := d.stop(); err != nil {
		b.h.Fatalf("sync daemon: %v\n%s", err, out)
	}
	lap("daemon stopped")
	b.sh(fmt.Sprintf("%s sync --catch-up --log-level warn --source '%s' --target '%s'", b.bin, src.DSN(benchDB), dst.DSN(benchDB)))
	lap("caught up, sequences copied")
	b.sh(fmt.Sprintf("%s verify --log-level warn --source '%s' --target '%s'", b.bin, src.DSN(benchDB), dst.DSN(benchDB)))
	lap("verified")
	byHand := time.Since(start)
	summary := load()

	b.rows = append(b.rows,
		row{section: section, what: "write pause changed", ours: changed, native: byHand, vs: "manual (verify)", note: "goal: ours < 2s"},
		row{section: section, what: "write pause verify", ours: verified, native: byHand, vs: "manual (verify)"})
	uptime, _ := exec.Command("uptime").Output()
	b.details = append(b.details, fmt.Sprintf("cutover: pgbench -R %d -c 4 -j 2 on scale %d for %s before each cutover, sync daemon running; uptime: %s\n%s\n%s\nmanual (times since the fence): %s; %s",
		b.rate, b.scale, cutoverLoadFor, strings.TrimSpace(string(uptime)), changedDetail, verifiedDetail, strings.Join(manual, ", "), summary))
}

// cutoverLoad starts pgbench at b.rate on src and waits cutoverLoadFor;
// the function it returns stops pgbench (the fence ends its sessions) and
// returns its summary.
func (b *bench) cutoverLoad(src *pgtest.Cluster) func() string {
	cmd := exec.Command("pgbench", "-n", "-R", fmt.Sprint(b.rate), "-T", "600", "-c", "4", "-j", "2", src.DSN(benchDB))
	cmd.Env = append(os.Environ(), "PATH=/usr/lib/postgresql/15/bin:"+os.Getenv("PATH"))
	cmd.Path = "/usr/lib/postgresql/15/bin/pgbench"
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.h.Fatalf("start pgbench: %v", err)
	}
	b.h.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	time.Sleep(cutoverLoadFor)
	return func() string {
		// Every client ends at the fence; pgbench then exits.
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		var lines []string
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.Contains(l, "processed") || strings.Contains(l, "aborted") || strings.HasPrefix(l, "tps") {
				lines = append(lines, strings.TrimSpace(l))
			}
		}
		return "pgbench: " + strings.Join(lines, "; ")
	}
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
