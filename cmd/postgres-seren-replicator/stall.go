package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/internal/metrics"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// receiveTimeout is --receive-timeout, raised to twice the source's
// wal_sender_timeout: a walsender busy decoding a large transaction (its
// changes filtered out, so nothing is sent) reads our requests for a reply
// only about every wal_sender_timeout/2, and a connection given up then
// would restart that decoding from its beginning, again and again.
func (r *pipelineRunner) receiveTimeout(ctx context.Context, src *pgx.Conn) time.Duration {
	var ms int64
	if err := src.QueryRow(ctx, `SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'`).Scan(&ms); err != nil {
		r.log.Debug("could not read the source's wal_sender_timeout", "error", err)
		return r.cmd.ReceiveTimeout
	}
	if senderTimeout := time.Duration(ms) * time.Millisecond; 2*senderTimeout > r.cmd.ReceiveTimeout {
		return 2 * senderTimeout
	}
	return r.cmd.ReceiveTimeout
}

// stallWatch remembers when a stall was last logged, so a long stall is
// logged once per --stall-warning period rather than at every sample.
type stallWatch struct {
	targetLogged time.Time
}

// checkStalls publishes how long each side has kept the pipeline waiting,
// logs a target wait longer than --stall-warning with the sessions that
// block it, and returns the /readyz reason ("" when nothing is stuck). The
// stream itself logs and ends a connection on which the source stays silent.
func (r *pipelineRunner) checkStalls(ctx context.Context, w *stallWatch, st *stream.Stream, applier *apply.Applier) string {
	unanswered := st.Unanswered()
	waiting, pid := applier.Waiting()
	r.mon.metrics.SetStall(r.db.Name, metrics.SideSource, unanswered)
	r.mon.metrics.SetStall(r.db.Name, metrics.SideTarget, waiting)
	var reasons []string
	// A request answered within a quarter of the timeout is a round trip,
	// not a stall.
	if unanswered >= st.ReceiveTimeout()/4 {
		reasons = append(reasons, fmt.Sprintf("the source has not answered on the replication connection for %s", unanswered.Round(time.Second)))
	}
	if waiting >= r.cmd.StallWarning {
		blockers := r.targetBlockers(ctx, pid)
		reasons = append(reasons, fmt.Sprintf("a batch has waited on the target for %s (%s)", waiting.Round(time.Second), blockers))
		if time.Since(w.targetLogged) >= r.cmd.StallWarning {
			w.targetLogged = time.Now()
			r.log.Warn("a batch is waiting on the target", "waiting_for", waiting.Round(time.Second).String(),
				"target_pid", pid, "blocked_by", blockers)
		}
	}
	return strings.Join(reasons, "; ")
}

// targetBlockers describes the target sessions that block the apply session
// pid (from pg_blocking_pids; the role may see only its own sessions' details),
// or says that the target does not answer.
func (r *pipelineRunner) targetBlockers(ctx context.Context, pid uint32) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := r.db.Target.Connect(ctx)
	if err != nil {
		return fmt.Sprintf("the target does not accept a new connection either: %v", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT b.pid, coalesce(a.usename, ''), coalesce(a.application_name, ''), coalesce(a.state, ''),
			coalesce(extract(epoch FROM now() - a.xact_start)::int, 0)
		FROM unnest(pg_blocking_pids($1)) AS b(pid) LEFT JOIN pg_stat_activity a ON a.pid = b.pid ORDER BY b.pid`, int64(pid))
	if err != nil {
		return fmt.Sprintf("could not ask the target what blocks it: %v", err)
	}
	var found []string
	for rows.Next() {
		var bpid, age int64
		var user, app, state string
		if err := rows.Scan(&bpid, &user, &app, &state, &age); err != nil {
			return fmt.Sprintf("could not ask the target what blocks it: %v", err)
		}
		desc := fmt.Sprintf("pid %d", bpid)
		var details []string
		for _, d := range []string{user, app, state} {
			if d != "" {
				details = append(details, d)
			}
		}
		if age > 0 {
			details = append(details, fmt.Sprintf("transaction open %ds", age))
		}
		if len(details) > 0 {
			desc += " (" + strings.Join(details, ", ") + ")"
		}
		found = append(found, desc)
	}
	if err := rows.Err(); err != nil {
		return fmt.Sprintf("could not ask the target what blocks it: %v", err)
	}
	if len(found) == 0 {
		return "no session blocks it: the target is slow or the statement is large"
	}
	return "blocked by " + strings.Join(found, ", ")
}
