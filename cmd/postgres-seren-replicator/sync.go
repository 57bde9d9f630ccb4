package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/daemon"
	"github.com/serenorg/postgres-seren-replicator/internal/metrics"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// SyncCmd streams changes from the source and applies them to the target.
type SyncCmd struct {
	Common
	CatchUp bool `name:"catch-up" env:"SEREN_CATCH_UP" help:"Apply everything up to the source's current WAL position, then exit."`
	Replication

	MaxBatchChanges    int           `name:"max-batch-changes" default:"20000" env:"SEREN_MAX_BATCH_CHANGES" help:"Most changes in one target transaction."`
	MaxBatchDelay      time.Duration `name:"max-batch-delay" env:"SEREN_MAX_BATCH_DELAY" help:"Longest time a target transaction stays open while changes keep coming (default 10ms; 500ms with --catch-up)."`
	StatusInterval     time.Duration `name:"status-interval" default:"5s" env:"SEREN_STATUS_INTERVAL" help:"Longest time between status updates to the source (keep well under wal_sender_timeout)."`
	SequenceInterval   time.Duration `name:"sequence-interval" default:"1m" env:"SEREN_SEQUENCE_INTERVAL" help:"How often the daemon copies sequence values to the target (0 turns it off)."`
	ReceiveTimeout     time.Duration `name:"receive-timeout" default:"60s" env:"SEREN_RECEIVE_TIMEOUT" help:"How long the source may send nothing, not even a reply to a request for one, before the replication connection counts as dead and is reopened (like wal_receiver_timeout; raised to twice the source's wal_sender_timeout when that is longer)."`
	StallWarning       time.Duration `name:"stall-warning" default:"30s" env:"SEREN_STALL_WARNING" help:"How long a batch may wait on the target before a warning names what blocks it and /readyz reports not ready."`
	SchemaChanges      string        `name:"schema-changes" enum:"apply,stop" default:"apply" env:"SEREN_SCHEMA_CHANGES" help:"What to do when the source adds or drops a column or creates a table the selection covers: apply it to the target (a new table is copied, then streams), or stop with what to do (type changes and renames always stop)."`
	DDLCapture         bool          `name:"ddl-capture" env:"SEREN_DDL_CAPTURE" help:"Install on each source database an event trigger that records every DDL statement into a table the publication carries, so that the statements reach the target in commit order and run there (needs a role that may create event triggers: validate says). --ddl-capture=false removes it; left out, the source keeps what it has."`
	TableCheckInterval time.Duration `name:"table-check-interval" default:"30s" env:"SEREN_TABLE_CHECK_INTERVAL" help:"How often a running sync looks for tables created on the source that the selection covers (0: only when sync starts)."`
	MaxRetryDelay      time.Duration `name:"max-retry-delay" default:"30s" env:"SEREN_MAX_RETRY_DELAY" help:"Longest wait between reconnection attempts."`
	MetricsAddr        string        `name:"metrics-addr" env:"SEREN_METRICS_ADDR" placeholder:"HOST:PORT" help:"Serve Prometheus /metrics, /healthz and /readyz here (off by default; 127.0.0.1:9188 is the documented choice)."`
	MaxLag             time.Duration `name:"max-lag" default:"60s" env:"SEREN_MAX_LAG" help:"Lag above which /readyz reports not ready."`
	LogInterval        time.Duration `name:"log-interval" default:"30s" env:"SEREN_LOG_INTERVAL" help:"How often to log a progress line per database: transactions and rows applied since the last line, lag, checkpoint (0 turns it off)."`

	mon *monitor
	// ddlCaptureGiven: --ddl-capture was given (true installs, false
	// removes); left out, the source keeps what it has.
	ddlCaptureGiven bool
	// recorded is the migration's record on the target (nil for one made
	// before records were kept).
	recorded *migration
}

// reloadSettings re-reads the settings SIGHUP may change without a restart:
// the log level, from the unit's environment file.
func reloadSettings(env *Env) {
	path := os.Getenv(daemon.EnvFileVar)
	if path == "" {
		env.Log.Info("SIGHUP: no environment file to re-read (set " + daemon.EnvFileVar + ")")
		return
	}
	vars, err := daemon.ReadEnvFile(path)
	if err != nil {
		env.Log.Warn("SIGHUP: reload failed", "error", err)
		return
	}
	if lvl, ok := vars["SEREN_LOG_LEVEL"]; ok {
		if err := env.Level.UnmarshalText([]byte(lvl)); err != nil {
			env.Log.Warn("SIGHUP: bad SEREN_LOG_LEVEL", "value", lvl)
			return
		}
	}
	env.Log.Info("SIGHUP: settings reloaded", "log_level", env.Level.Level().String())
}

// Replication holds the names of what init creates and sync uses.
type Replication struct {
	Slot             string `env:"SEREN_SLOT" help:"Replication slot name (only with one database; default: derived from the database name)."`
	Publication      string `env:"SEREN_PUBLICATION" help:"Publication name on the source (default: the slot name with _pub appended, so each migration has its own; a migration whose slot was created with seren_replicator_pub, the default before, keeps it)."`
	CheckpointSchema string `name:"checkpoint-schema" default:"seren_replicator" env:"SEREN_CHECKPOINT_SCHEMA" help:"Target schema holding the checkpoint table."`
}

// SlotFor is the slot of one database of the plan.
func (r Replication) SlotFor(db string) string {
	if r.Slot != "" {
		return r.Slot
	}
	return stream.DefaultSlotName(db)
}

// Check rejects --slot with several databases (each needs its own slot).
func (r Replication) Check(p plan.Plan) error {
	if r.Slot != "" && len(p.Databases) > 1 {
		return usageError("--slot names one slot but %d databases are selected: leave --slot out to use one derived slot per database", len(p.Databases))
	}
	return nil
}

// check rejects numeric flags that make no sense instead of replacing them
// with defaults.
func (c *SyncCmd) check() error {
	switch {
	case c.MaxBatchChanges < 1:
		return usageError("--max-batch-changes must be at least 1")
	case c.MaxBatchDelay < 0:
		return usageError("--max-batch-delay must not be negative")
	case c.StatusInterval <= 0:
		return usageError("--status-interval must be positive (keep it well under the source's wal_sender_timeout)")
	case c.SequenceInterval < 0:
		return usageError("--sequence-interval must not be negative (0 turns the copy off)")
	case c.ReceiveTimeout <= 0:
		return usageError("--receive-timeout must be positive")
	case c.StallWarning <= 0:
		return usageError("--stall-warning must be positive")
	case c.TableCheckInterval < 0:
		return usageError("--table-check-interval must not be negative (0 checks only when sync starts)")
	case c.MaxRetryDelay <= 0:
		return usageError("--max-retry-delay must be positive")
	case c.MaxLag <= 0:
		return usageError("--max-lag must be positive")
	case c.LogInterval < 0:
		return usageError("--log-interval must not be negative (0 turns the progress line off)")
	}
	return nil
}

// Run streams until stopped (or until caught up with --catch-up).
func (c *SyncCmd) Run(ctx context.Context, env *Env) error {
	if err := c.check(); err != nil {
		return err
	}
	p, recorded, err := c.resolveRecorded(ctx, env, &c.Replication, recallSync)
	if err != nil {
		return err
	}
	c.recorded = recorded
	c.ddlCaptureGiven = env.Given["ddl-capture"]
	if err := c.Replication.Check(p); err != nil {
		return err
	}
	tuneGC()
	start := time.Now()
	var m *metrics.Metrics
	if c.MetricsAddr != "" {
		reg := metrics.NewRegistry()
		m = metrics.New(reg)
		m.StartAtZero(databaseNames(p)...)
		mon := newMonitor(m, c.MaxLag, len(p.Databases))
		c.mon = mon
		// The metrics server is not part of the group: it must not keep the
		// run alive, and its failure to bind is reported at once.
		l, err := net.Listen("tcp", c.MetricsAddr)
		if err != nil {
			return usageError("--metrics-addr %s: %v", c.MetricsAddr, err)
		}
		srvCtx, stopSrv := context.WithCancel(ctx)
		srvDone := make(chan struct{})
		go func() { defer close(srvDone); _ = daemon.ServeListener(srvCtx, l, reg, mon.ready.Check) }()
		defer func() { stopSrv(); <-srvDone }()
		env.Log.Info("serving metrics", "addr", l.Addr().String())
	}
	if c.mon == nil {
		c.mon = newMonitor(nil, c.MaxLag, len(p.Databases))
	}
	if !c.CatchUp {
		hupCtx, stopHUP := context.WithCancel(ctx)
		hupDone := make(chan struct{})
		go func() { defer close(hupDone); daemon.HandleHUP(hupCtx, func() { reloadSettings(env) }) }()
		defer func() { stopHUP(); <-hupDone }()
		defer func() { _ = daemon.Stopping() }()
	}
	names := databaseNames(p)
	progCtx, stopProgress := context.WithCancel(ctx)
	go c.mon.logProgress(progCtx, env.Log, names, c.LogInterval)
	defer stopProgress()
	// Each database streams on its own: one that stops on an error leaves
	// the others streaming (its failure is logged, in the metrics and in
	// /readyz), and the run reports every failure when it ends.
	results := make([]pipelineResult, len(p.Databases))
	errs := make([]error, len(p.Databases))
	var wg sync.WaitGroup
	for i, db := range p.Databases {
		// Each database has its own slot and so its own default publication,
		// which its runner finds on the source (cmd.Publication left empty).
		cmd := *c
		r := &pipelineRunner{cmd: &cmd, db: db, slot: c.SlotFor(db.Name), log: env.Log.With("database", db.Name), mon: c.mon}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := r.run(ctx)
			results[i] = res
			switch {
			case err == nil && c.CatchUp && ctx.Err() == nil:
				// Logical decoding does not carry sequences: bring them up to date.
				err = syncSequences(ctx, db, r.log)
				if err == nil {
					_, err = r.finishTables(ctx, 0)
				}
				if err == nil && c.SchemaChanges == string(apply.SchemaChangesApply) {
					_, err = r.followObjects(ctx)
				}
			case err == nil && ctx.Err() != nil:
				// A clean stop leaves them up to date too, so a migration stopped
				// for the cutover is ready for it; the stop succeeds either way.
				seqCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
				if serr := syncSequences(seqCtx, db, r.log); serr != nil {
					r.log.Warn("sequences not copied on stop; status shows which are behind", "error", serr)
				}
				cancel()
			}
			if err != nil {
				errs[i] = fmt.Errorf("database %s: %w", db.Name, err)
				if len(p.Databases) > 1 {
					r.log.Error("replication of this database stopped; the others go on", "error", err)
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		logStopped(env.Log, names, results, errs, start)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if c.CatchUp {
		for i, db := range p.Databases {
			r := results[i]
			fmt.Fprintf(env.Stdout, "%s: caught up to %s (slot %s): %s, %s in %s; target busy %s, waiting for the source %s\n",
				db.Name, r.position.EndLSN, c.SlotFor(db.Name), counted(r.stats.Transactions, "transaction"), counted(r.stats.Changes, "change"), counted(r.stats.Batches, "batch"),
				r.stats.Busy.Round(time.Millisecond), r.stats.Idle.Round(time.Millisecond))
		}
		fmt.Fprintf(env.Stdout, "took %s, peak memory %d MiB\n", time.Since(start).Round(time.Millisecond), peakRSS()>>20)
	}
	return nil
}

// The apply loop's garbage is short-lived and its live heap is bounded by the
// batch limits (tens of MiB), so sync collects less often than Go's default
// and caps the heap instead. GOGC and GOMEMLIMIT still win when set.
const (
	syncGCPercent   = 200
	syncMemoryLimit = 128 << 20
)

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(syncGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(syncMemoryLimit)
	}
}

// peakRSS is the process's peak resident memory in bytes: VmHWM of
// /proc/self/status where there is one. getrusage's maximum survives exec,
// so it would report a larger parent that started this process.
func peakRSS() int64 {
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				if err == nil {
					return kib << 10
				}
			}
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss << 10 // Linux reports KiB
}

// pipelineResult is where one database's pipeline ended.
type pipelineResult struct {
	position checkpoint.Position
	stats    apply.Stats
}

// currentLSN is the end of the source's WAL as inserted so far: what
// --catch-up drains to.
func currentLSN(ctx context.Context, conn *pgx.Conn) (pglogrepl.LSN, error) {
	var s string
	// The insert position, not the write position: an asynchronously
	// committed transaction may not be written yet, and the source streams
	// it once it is flushed.
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		return 0, fmt.Errorf("read source WAL position: %w", err)
	}
	return pglogrepl.ParseLSN(s)
}
