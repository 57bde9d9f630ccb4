package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/serenorg/postgres-seren-replicator/internal/plan"
)

// databaseNames lists the plan's source databases.
func databaseNames(p plan.Plan) []string {
	names := make([]string, len(p.Databases))
	for i, db := range p.Databases {
		names[i] = db.Name
	}
	return names
}

// progressCounts is what one database's pipeline applied and where it
// stands, kept by the monitor for the daemon's periodic progress line.
type progressCounts struct {
	txns, rows int64         // applied since the start
	checkpoint pglogrepl.LSN // end LSN of the last applied transaction
	lagBytes   int64
	lag        time.Duration
	sampled    bool // lagBytes and lag were measured at least once
}

// applied counts one committed batch of db.
func (m *monitor) applied(db string, txns, rows int, pos pglogrepl.LSN) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.progressOf(db)
	p.txns += int64(txns)
	p.rows += int64(rows)
	p.checkpoint = max(p.checkpoint, pos)
}

// sampledLag records db's latest lag measurement.
func (m *monitor) sampledLag(db string, bytes int64, lag time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.progressOf(db)
	p.lagBytes, p.lag, p.sampled = bytes, lag, true
}

// progressOf returns db's counts, creating them; m.mu must be held.
func (m *monitor) progressOf(db string) *progressCounts {
	if m.progress == nil {
		m.progress = map[string]*progressCounts{}
	}
	p, ok := m.progress[db]
	if !ok {
		p = &progressCounts{}
		m.progress[db] = p
	}
	return p
}

// snapshot copies every database's counts.
func (m *monitor) snapshot() map[string]progressCounts {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]progressCounts, len(m.progress))
	for db, p := range m.progress {
		out[db] = *p
	}
	return out
}

// logProgress logs one line per database every interval until ctx ends:
// transactions and rows applied since the previous line, the lag last
// measured, and the checkpoint. A database that has not streamed yet gets
// no line (its connection attempts are logged).
func (m *monitor) logProgress(ctx context.Context, log *slog.Logger, dbs []string, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	last := map[string]progressCounts{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := m.snapshot()
		for _, db := range dbs {
			p, ok := now[db]
			if !ok {
				continue
			}
			prev := last[db]
			attrs := []any{"database", db,
				"applied_transactions", p.txns - prev.txns, "applied_rows", p.rows - prev.rows,
				"interval", interval.String()}
			if p.sampled {
				attrs = append(attrs, "lag_bytes", p.lagBytes, "lag", p.lag.Round(time.Millisecond).String())
			}
			if p.checkpoint != 0 {
				attrs = append(attrs, "checkpoint", p.checkpoint.String())
			}
			log.Info("progress", attrs...)
			last[db] = p
		}
	}
}

// logStopped logs, after a signal stopped the daemon, where each database
// that did not fail stopped: the checkpoint the next start resumes from and
// what this run applied.
func logStopped(log *slog.Logger, names []string, results []pipelineResult, errs []error, started time.Time) {
	for i, db := range names {
		if errs[i] != nil {
			continue // its error is reported
		}
		r := results[i]
		attrs := []any{"database", db, "applied_transactions", r.stats.Transactions, "applied_rows", r.stats.Changes,
			"ran_for", time.Since(started).Round(time.Second).String()}
		if r.position.EndLSN != 0 {
			attrs = append(attrs, "checkpoint", r.position.EndLSN.String())
		}
		log.Info("stopped; the next start resumes from the checkpoint", attrs...)
	}
}
