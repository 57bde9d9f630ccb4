package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/daemon"
	"github.com/serenorg/postgres-seren-replicator/internal/metrics"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/snapshot"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// sampleEvery is how often the daemon measures lag and slot retention.
const sampleEvery = 5 * time.Second

// monitor connects the pipelines to the operator: Prometheus metrics,
// /readyz, and systemd's READY, STATUS and WATCHDOG notifications.
type monitor struct {
	metrics *metrics.Metrics
	ready   *daemon.Readiness
	pinger  *daemon.Pinger
	maxLag  time.Duration
	want    int // databases that must stream before READY=1

	mu        sync.Mutex
	streaming map[string]bool
	lags      map[string]time.Duration
	notified  bool
	progress  map[string]*progressCounts
}

func newMonitor(m *metrics.Metrics, maxLag time.Duration, databases int) *monitor {
	return &monitor{
		metrics: m, ready: &daemon.Readiness{}, pinger: daemon.NewPinger(), maxLag: maxLag, want: databases,
		streaming: map[string]bool{}, lags: map[string]time.Duration{},
	}
}

// started records that db streams; once every database does, systemd hears
// READY=1.
func (m *monitor) started(db string) {
	m.ready.Set(db, nil)
	m.mu.Lock()
	m.streaming[db] = true
	notify := !m.notified && len(m.streaming) == m.want
	m.notified = m.notified || notify
	m.mu.Unlock()
	if notify {
		_ = daemon.Ready()
		_ = daemon.Status(fmt.Sprintf("streaming %d database(s)", m.want))
	}
}

// stopped records that db is not streaming, and why.
func (m *monitor) stopped(db string, err error) {
	m.ready.Set(db, err)
	m.metrics.Error(db, metrics.KindStream)
}

// sample records a database's lag and stall reason (empty when nothing is
// stuck) and updates readiness and the systemd status.
func (m *monitor) sample(db string, bytes int64, lag time.Duration, stall string) {
	m.metrics.SetLag(db, bytes, lag)
	m.sampledLag(db, bytes, lag)
	switch {
	case stall != "":
		m.ready.Set(db, errors.New(stall))
	case m.maxLag > 0 && lag > m.maxLag:
		m.ready.Set(db, fmt.Errorf("lag %s is above --max-lag %s", lag.Round(time.Millisecond), m.maxLag))
	default:
		m.ready.Set(db, nil)
	}
	m.mu.Lock()
	m.lags[db] = lag
	parts := make([]string, 0, len(m.lags))
	for name, l := range m.lags {
		parts = append(parts, fmt.Sprintf("%s lag %s", name, l.Round(time.Millisecond)))
	}
	m.mu.Unlock()
	sort.Strings(parts)
	_ = daemon.Status("streaming: " + strings.Join(parts, ", "))
}

// observer adapts the monitor to apply.Observer for one database.
type observer struct{ m *monitor }

func (o *observer) BatchCommitted(db string, txns, changes int, took time.Duration, pos checkpoint.Position) {
	o.m.metrics.BatchApplied(db, txns, changes, took)
	o.m.metrics.SetCheckpoint(db, pos.EndLSN)
	o.m.applied(db, txns, changes, pos.EndLSN)
}

func (o *observer) RowsApplied(db, table, op string, n int) {
	o.m.metrics.RowsApplied(db, table, op, n)
}

// housekeeping runs beside one database's pipeline until ctx ends: lag,
// stall and slot samples for logs, metrics, /readyz and the systemd status,
// periodic sequence copies, and the poll for tables created on the source
// that the selection covers, which ends the attempt through restart so the
// next one copies them (joinNewTables).
func (r *pipelineRunner) housekeeping(ctx context.Context, st *stream.Stream, applier *apply.Applier, restart context.CancelCauseFunc) {
	every := sampleEvery
	if r.cmd.LogInterval > 0 {
		every = min(every, r.cmd.LogInterval) // each progress line shows a fresh lag
	}
	sample := time.NewTicker(every)
	defer sample.Stop()
	var sequences, tables <-chan time.Time
	if r.cmd.SequenceInterval > 0 {
		t := time.NewTicker(r.cmd.SequenceInterval)
		defer t.Stop()
		sequences = t.C
	}
	if r.cmd.TableCheckInterval > 0 && r.cmd.SchemaChanges == string(apply.SchemaChangesApply) {
		t := time.NewTicker(r.cmd.TableCheckInterval)
		defer t.Stop()
		tables = t.C
	}
	var stalls stallWatch
	for {
		select {
		case <-ctx.Done():
			return
		case <-sample.C:
			// The stall check needs no source connection, so it runs even
			// when the source is unreachable.
			stall := r.checkStalls(ctx, &stalls, st, applier)
			bytes, err := r.sampleLagBytes(ctx, st)
			if err != nil && ctx.Err() == nil {
				r.log.Debug("lag sample failed", "error", err)
			}
			r.mon.sample(r.db.Name, bytes, st.Lag(), stall)
		case <-tables:
			added, err := r.tablesAppeared(ctx)
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn("checking the source for new tables failed; will retry", "error", err)
				}
				continue
			}
			if len(added) > 0 {
				r.log.Info("new tables selected on the source: streaming pauses while they are copied", "tables", len(added), "first", added[0].Qualified())
				restart(errTablesJoined)
				return
			}
			// Foreign keys of joined tables are made between sessions (the
			// next one holds them like the others), when nothing applies.
			if due, err := r.tablesToFinish(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("checking joined tables failed; will retry", "error", err)
			} else if due {
				restart(errTablesJoined)
				return
			}
			// So are the indexes and constraints the source made since.
			if made, err := r.followObjects(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("comparing the indexes and constraints of source and target failed; will retry", "error", err)
			} else if made {
				restart(errTablesJoined)
				return
			}
		case <-sequences:
			if err := syncSequences(ctx, r.db, r.log); err != nil && ctx.Err() == nil {
				r.log.Warn("sequence copy failed; will retry", "error", err)
			}
		}
	}
}

// sampleLagBytes measures the WAL from the applied position to the source's
// current position, and records the WAL the slot retains.
func (r *pipelineRunner) sampleLagBytes(ctx context.Context, st *stream.Stream) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, sampleEvery)
	defer cancel()
	conn, err := r.db.Source.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	slot, err := stream.LookupSlot(ctx, conn, r.slot)
	if err != nil {
		return 0, err
	}
	cur, err := currentLSN(ctx, conn)
	if err != nil {
		return 0, err
	}
	r.mon.metrics.SetSlotRetained(r.db.Name, slot.RetainedBytes)
	if applied := st.Applied(); cur > applied {
		return int64(cur - applied), nil
	}
	return 0, nil
}

// syncSequences copies sequence values from source to target: logical
// decoding does not carry them.
func syncSequences(ctx context.Context, db plan.Database, log *slog.Logger) error {
	src, err := db.Source.Connect(ctx)
	if err != nil {
		return err
	}
	defer src.Close(ctx)
	dst, err := db.Target.Connect(ctx)
	if err != nil {
		return err
	}
	defer dst.Close(ctx)
	n, err := snapshot.SyncSequences(ctx, src, dst)
	if err != nil {
		return fmt.Errorf("copy sequences: %w", err)
	}
	log.Debug("sequences copied", "count", n)
	return nil
}
