package main

import (
	"context"
	"net"
	"time"

	"github.com/serenorg/postgres-seren-replicator/internal/daemon"
	"github.com/serenorg/postgres-seren-replicator/internal/metrics"
	"github.com/serenorg/postgres-seren-replicator/snapshot"
	"github.com/serenorg/postgres-seren-replicator/verify"
)

// JobMetrics are the metrics flags of the commands that run to an end
// (init, verify): a copy or a comparison of a large database takes hours,
// and its progress belongs on the same dashboard as the daemon's.
type JobMetrics struct {
	MetricsAddr   string        `name:"metrics-addr" env:"SEREN_JOB_METRICS_ADDR" placeholder:"HOST:PORT" help:"Serve Prometheus /metrics and /healthz here while the command runs (off by default; its own variable, so a daemon's SEREN_METRICS_ADDR in the same environment does not make it take the daemon's port)."`
	MetricsLinger time.Duration `name:"metrics-linger" env:"SEREN_METRICS_LINGER" help:"With --metrics-addr: keep serving this long after the work ends, so a scrape sees the final values (0: stop at once; a signal ends the wait)."`
}

// jobMetrics is a running metrics endpoint of one command.
type jobMetrics struct {
	m      *metrics.Metrics
	jobs   *metrics.Jobs
	linger time.Duration
	stop   context.CancelFunc
	done   chan struct{}
}

// serve starts the endpoint when --metrics-addr is set; without it the
// returned value does nothing (its collectors are nil). A port that cannot
// be bound is a usage error, reported before any work.
func (f JobMetrics) serve(ctx context.Context, env *Env) (*jobMetrics, error) {
	if f.MetricsLinger < 0 {
		return nil, usageError("--metrics-linger must not be negative")
	}
	if f.MetricsAddr == "" {
		return &jobMetrics{}, nil
	}
	reg := metrics.NewRegistry()
	jm := &jobMetrics{m: metrics.New(reg), jobs: metrics.NewJobs(reg), linger: f.MetricsLinger, done: make(chan struct{})}
	l, err := net.Listen("tcp", f.MetricsAddr)
	if err != nil {
		return nil, usageError("--metrics-addr %s: %v", f.MetricsAddr, err)
	}
	srvCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	jm.stop = stop
	go func() { defer close(jm.done); _ = daemon.ServeListener(srvCtx, l, reg, nil) }()
	env.Log.Info("serving metrics", "addr", l.Addr().String())
	return jm, nil
}

// close stops the endpoint, after --metrics-linger unless ctx ends first.
func (jm *jobMetrics) close(ctx context.Context, env *Env) {
	if jm.stop == nil {
		return
	}
	if jm.linger > 0 && ctx.Err() == nil {
		env.Log.Info("serving the final metrics until --metrics-linger passes", "linger", jm.linger.String())
		select {
		case <-ctx.Done():
		case <-time.After(jm.linger):
		}
	}
	jm.stop()
	<-jm.done
}

// copyObserver adapts the metrics to snapshot.CopyObserver.
type copyObserver struct{ jm *jobMetrics }

var _ snapshot.CopyObserver = copyObserver{}

func (o copyObserver) CopyStarted(db string, tables int) { o.jm.m.SnapshotStarted(db, tables) }

func (o copyObserver) Copied(db, table string, n int64) {
	o.jm.m.SnapshotCopied(db, n)
	o.jm.jobs.TableCopied(db, table, n)
}

func (o copyObserver) PieceCopied(db, table string, rows int64, tableDone bool) {
	o.jm.jobs.TableRows(db, table, rows)
	if tableDone {
		o.jm.m.SnapshotTableDone(db)
	}
}

// verifyObserver adapts the metrics to verify.Observer.
type verifyObserver struct{ jm *jobMetrics }

var _ verify.Observer = verifyObserver{}

func (o verifyObserver) RangesPlanned(db string, n int) { o.jm.jobs.VerifyPlanned(db, n) }

func (o verifyObserver) RangeCompared(db string, rows int64, differs bool) {
	o.jm.jobs.VerifyRange(db, rows, differs)
}
