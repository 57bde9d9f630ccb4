package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/plan"
)

// A hook fence runs the user's command to stop writes (pgbouncer PAUSE, a
// load-balancer switch); cutover cannot see what it did, so it checks
// afterwards that no write is in flight on the source, and after the drain
// again. The unfence command is run on any failure once the fence command
// has started, whether or not it succeeded: a command that failed half-way
// may have paused part of the application.

// hookOutputLines bounds the output quoted in an error.
const hookOutputLines = 10

// runHook runs command with sh -c, copying its output to w with each line
// prefixed by name, and returns the last lines of that output. A non-zero
// exit, or the command outlasting timeout, is an error that quotes them.
func runHook(ctx context.Context, w io.Writer, name, command string, timeout time.Duration, dbs []plan.Database) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	names := make([]string, len(dbs))
	for i, db := range dbs {
		names[i] = db.Name
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Env = append(os.Environ(), "SEREN_CUTOVER_DATABASES="+strings.Join(names, ","), "SEREN_CUTOVER_HOOK="+name)
	// Its own process group, ended as a whole on Ctrl-C or timeout: a
	// child of sh (a sleep, a psql) must not go on pausing the application,
	// nor hold cutover up by keeping the output pipe open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out := &hookOutput{w: w, prefix: name + ": "}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	out.flush()
	tail := out.tail()
	switch {
	case err == nil:
		return tail, nil
	case ctx.Err() == context.Canceled:
		err = fmt.Errorf("%s ended: cutover was interrupted", name)
	case ctx.Err() == context.DeadlineExceeded:
		err = fmt.Errorf("%s did not finish within --hook-timeout %s", name, timeout)
	default:
		err = fmt.Errorf("%s failed: %w", name, err)
	}
	if tail != "" {
		err = fmt.Errorf("%w (its output ended: %s)", err, tail)
	}
	return tail, err
}

// hookOutput copies a command's output line by line with a prefix and
// keeps its last lines.
type hookOutput struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    bytes.Buffer
	last   []string
}

func (h *hookOutput) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Write(p)
	for {
		i := bytes.IndexByte(h.buf.Bytes(), '\n')
		if i < 0 {
			return len(p), nil
		}
		h.line(string(h.buf.Next(i + 1)))
	}
}

func (h *hookOutput) line(s string) {
	s = strings.TrimRight(s, "\r\n")
	fmt.Fprintln(h.w, h.prefix+s)
	if strings.TrimSpace(s) == "" {
		return
	}
	h.last = append(h.last, strings.TrimSpace(s))
	if len(h.last) > hookOutputLines {
		h.last = h.last[1:]
	}
}

func (h *hookOutput) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.buf.Len() > 0 {
		h.line(h.buf.String())
		h.buf.Reset()
	}
}

func (h *hookOutput) tail() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.last, " / ")
}

// inFlightSQL lists the client sessions other than this tool's that hold a
// transaction id: they have written and not yet committed.
const inFlightSQL = `SELECT format('pid %s (%s, %s, %s)', pid, coalesce(usename::text, '?'), coalesce(nullif(application_name, ''), '?'), coalesce(host(client_addr), 'local'))
	FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
	AND application_name <> $1 AND backend_xid IS NOT NULL`

// noWrites checks, until grace has passed, that no client session on the
// databases holds an open write transaction and no prepared transaction
// waits (--fence=hook: the command stopped new writes; those begun before
// must end). Sessions that are merely connected (a pooler's, idle) pass.
func (c *CutoverCmd) noWrites(ctx context.Context, dbs []plan.Database, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for _, db := range dbs {
		conn, err := db.Source.Connect(ctx)
		if err != nil {
			return err
		}
		clear := 0
		for {
			names, err := inFlight(ctx, conn, db.Source.ApplicationName())
			if err == nil && len(names) == 0 {
				err = noPreparedTransactions(ctx, conn, db)
			}
			if err == nil && len(names) > 0 && time.Now().After(deadline) {
				err = fmt.Errorf("%w: sessions still write on %s after --fence-command and --grace %s: %s: make the fence command stop them, or give them a longer --grace",
					ErrCheckFailed, db.Name, c.Grace, strings.Join(names, ", "))
			}
			if err != nil {
				conn.Close(context.Background())
				return err
			}
			if len(names) == 0 {
				// Twice, a moment apart, while there is grace left: a
				// statement under way gets its transaction id with its
				// first write.
				if clear++; clear == 2 || time.Now().After(deadline) {
					conn.Close(context.Background())
					break
				}
			} else {
				clear = 0
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func inFlight(ctx context.Context, conn *pgx.Conn, app string) ([]string, error) {
	rows, err := conn.Query(ctx, inFlightSQL, app)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list writing sessions: %w", err)
	}
	return names, nil
}
