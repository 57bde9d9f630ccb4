// Package apply writes a source's decoded changes to the target with
// ordinary SQL, in source commit order. Several source transactions are
// grouped into one target transaction (a batch); the checkpoint row that
// records the batch's end LSN is written in that same transaction, so after
// a crash the target holds each source transaction exactly once.
package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/ddlcapture"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// Defaults for Config, chosen by measurement (see the README's benchmark).
const (
	// DefaultMaxBatchChanges closes a batch after this many changes.
	DefaultMaxBatchChanges = 20000
	// DefaultMaxBatchDelay closes a batch this long after it opened, so lag
	// stays low under steady load; a batch also closes whenever no more
	// changes are waiting and, in a daemon, whenever the target has
	// finished every batch sent.
	DefaultMaxBatchDelay = 10 * time.Millisecond
	// DefaultCatchUpBatchDelay replaces it when a catch-up run drains a
	// backlog: nobody waits for each change, and larger batches merge more.
	DefaultCatchUpBatchDelay = 500 * time.Millisecond
	// DefaultPipelineStatements is how many statements go to the target in
	// one round trip.
	DefaultPipelineStatements = 1000
	// DefaultPipelineBytes caps the parameter bytes of one round trip, which
	// bounds memory whatever the size of a source transaction.
	DefaultPipelineBytes = 8 << 20
	// keepaliveCheckpointEvery limits how often an idle stream's position is
	// written to the checkpoint when nothing else moves it (each write is a
	// target transaction); a cutover's fence message lifts the limit once
	// (stream.FenceMessagePrefix).
	keepaliveCheckpointEvery = time.Second
)

// Config tunes an Applier.
type Config struct {
	// Database names the source database, for logs and metrics.
	Database string
	// Slot is the replication slot whose checkpoint the applier keeps.
	Slot string
	// Source is the source database, asked for column type names when a
	// table's shape changes.
	Source *conninfo.Conn
	// Store locates the checkpoint table on the target.
	Store checkpoint.Store
	// MaxBatchChanges, MaxBatchDelay, PipelineStatements and PipelineBytes
	// bound a batch; the Default constants apply when zero.
	MaxBatchChanges    int
	MaxBatchDelay      time.Duration
	PipelineStatements int
	PipelineBytes      int
	// StopAt, when set, makes Run return once the checkpoint reaches it
	// (sync --catch-up).
	StopAt pglogrepl.LSN
	// Observer receives statistics; may be nil.
	Observer Observer
	// ShutdownTimeout bounds how long a stop waits for the batch in flight;
	// DefaultShutdownTimeout when zero.
	ShutdownTimeout time.Duration
	// Heartbeat, when set, is called at least every second while the apply
	// loop is healthy (the systemd watchdog listens to it).
	Heartbeat func()
	// SchemaChanges says whether the source's unambiguous schema changes
	// (added and dropped columns) are applied to the target or stop
	// replication; SchemaChangesApply when empty.
	SchemaChanges SchemaChanges
	// Recopy says the caller copies a table again when the applier returns
	// a RecopyError for it (a schema change DDL cannot follow); otherwise
	// such a change stops replication with what to do by hand.
	Recopy bool
	// DDLCapture says the source captures DDL statements for this
	// migration (--ddl-capture): while captured statements that change a
	// table are still ahead in the stream, its Relation messages are not
	// compared with the source's catalog, which is ahead of them (ddl.go).
	DDLCapture bool
}

// SchemaChanges is what the applier does with a schema change on the source.
type SchemaChanges string

// Values of SchemaChanges.
const (
	SchemaChangesApply SchemaChanges = "apply"
	SchemaChangesStop  SchemaChanges = "stop"
)

// Observer receives what the applier did (the metrics package implements it).
type Observer interface {
	// BatchCommitted reports one committed target transaction.
	BatchCommitted(db string, txns, changes int, took time.Duration, pos checkpoint.Position)
	// RowsApplied reports rows changed in one table by one operation.
	RowsApplied(db, table, op string, n int)
}

// Acker hears of each position applied on the target: SetApplied once the
// batch that reached it committed (visible there), SetFlushed once that
// commit is durable, which is the only position the stream reports to the
// source as flushed.
type Acker interface {
	SetApplied(pglogrepl.LSN)
	SetFlushed(pglogrepl.LSN)
}

// Applier applies one source database's changes to its target database.
type Applier struct {
	conn        *pgconn.PgConn
	cfg         Config
	log         *slog.Logger
	replicaMode bool

	rels      map[uint32]*relation
	joins     map[string]pglogrepl.LSN            // copy LSN of tables added after init (join.go)
	txnFinal  pglogrepl.LSN                       // commit LSN of the source transaction being read
	skipped   int                                 // changes skipped because a table's copy holds them
	byOID     map[uint32]checkpoint.Table         // table states by source OID (follow.go)
	byName    map[string]uint32                   // source OID by target table name
	srcCols   map[uint32]checkpoint.SourceColumns // source attribute numbers by table OID (columns.go)
	pending   []pendingDDL                        // statements due once the stream passes a position (alter.go)
	ownTxn    bool                                // inBatch has opened a transaction of its own (follow.go)
	typeNames map[[2]int64]string
	source    *pgx.Conn // opened on first use, to describe column types
	seq       int       // names prepared statements

	ddlRels        map[uint32]*stream.Relation        // the capture table of --ddl-capture, by OID (ddl.go)
	streamPos      pglogrepl.LSN                      // WAL position of the last message of the transaction being read
	capturedShapes map[uint32]ddlcapture.TableColumns // columns the capture recorded last, by table OID
	lastCaptured   capturedStatement                  // what became of the last captured statement
	commitAfterTxn bool                               // a captured statement needs the batch to end with its transaction

	b     *batcher // what goes in which batch, what is checkpointed
	stats Stats

	acks *ackQueue // committed batches waiting for their commit's flush (durable.go)
	// syncCommit: every commit waits for its flush, because the target has
	// synchronous standbys (whose wait synchronous_commit = off would skip).
	syncCommit bool
	pollAt     time.Time // when to ask the target how far its WAL is flushed

	rowCounts map[[3]string]int // source changes per table and operation
	pipe      *pipeline         // being built
	flights   []*flight         // sent, oldest first; they run in order
	merged    merger
	ack       Acker

	// execCtx bounds the statements in flight: it ends when a shutdown
	// outlasts its grace period, or when the applier closes.
	execCtx  context.Context
	stopExec context.CancelFunc

	executing atomic.Int64 // when the pipeline now running started (unix ns); 0 when none
}

// sessionSettings make the target parse values exactly as the source printed
// them (see stream.OutputSettings). Commits do not wait for their WAL flush:
// a batch is acknowledged once the target's WAL is flushed past it
// (durable.go).
var sessionSettings = map[string]string{
	"synchronous_commit":                  "off",
	"statement_timeout":                   "0",
	"lock_timeout":                        "0",
	"idle_in_transaction_session_timeout": "0",
	// A policy must not filter or reject replicated rows: fail instead.
	"row_security": "off",
	// Type names come from the source's format_type under the same path.
	"search_path": "public",
	// Literals in the DDL the applier writes quote only single quotes.
	"standard_conforming_strings": "on",
}

// DefaultShutdownTimeout is how long a stop waits for the batch in flight to
// commit before it abandons it (the target rolls it back; it comes again).
const DefaultShutdownTimeout = 30 * time.Second

// New connects to the target, loads the slot's checkpoint and chooses the
// apply mode: session_replication_role = replica where the role may set it
// (no triggers or FK checks fire twice), source order otherwise.
func New(ctx context.Context, target *conninfo.Conn, cfg Config, log *slog.Logger) (*Applier, error) {
	if cfg.MaxBatchChanges <= 0 {
		cfg.MaxBatchChanges = DefaultMaxBatchChanges
	}
	if cfg.MaxBatchDelay <= 0 {
		cfg.MaxBatchDelay = DefaultMaxBatchDelay
		if cfg.StopAt != 0 {
			cfg.MaxBatchDelay = DefaultCatchUpBatchDelay
		}
	}
	if cfg.PipelineStatements <= 0 {
		cfg.PipelineStatements = DefaultPipelineStatements
	}
	if cfg.PipelineBytes <= 0 {
		cfg.PipelineBytes = DefaultPipelineBytes
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	settings := map[string]string{}
	for k, v := range stream.OutputSettings {
		settings[k] = v
	}
	for k, v := range sessionSettings {
		settings[k] = v
	}
	db, err := target.ConnectWith(ctx, settings)
	if err != nil {
		return nil, err
	}
	conn := db.PgConn()
	a := &Applier{conn: conn, cfg: cfg, log: log, rels: map[uint32]*relation{}, typeNames: map[[2]int64]string{}, rowCounts: map[[3]string]int{}, pipe: &pipeline{}}
	pos, err := a.setUp(ctx, db)
	if err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	a.b = newBatcher(pos, cfg.MaxBatchChanges, cfg.MaxBatchDelay, cfg.StopAt)
	a.acks = newAckQueue(pos.EndLSN)
	a.execCtx, a.stopExec = context.WithCancel(context.Background())
	return a, nil
}

// setUp prepares the target session: the apply mode, the migration's writer
// lock, the checkpoint to resume from, the table of holds and the prepared
// checkpoint statements.
func (a *Applier) setUp(ctx context.Context, db *pgx.Conn) (checkpoint.Position, error) {
	conn := a.conn
	if err := conn.Exec(ctx, "SET session_replication_role = replica").Close(); err == nil {
		a.replicaMode = true
	} else if !isPermissionError(err) {
		return checkpoint.Position{}, fmt.Errorf("set up target session: %w", err)
	}
	if err := a.checkStandbys(ctx); err != nil {
		return checkpoint.Position{}, err
	}
	if err := lockWriter(ctx, conn, a.cfg.Slot); err != nil {
		return checkpoint.Position{}, err
	}
	pos, err := a.cfg.Store.Load(ctx, db, a.cfg.Slot)
	if err != nil {
		return pos, err
	}
	if _, err := a.flushWAL(ctx, pos.EndLSN); err != nil {
		return pos, err
	}
	if err := a.cfg.Store.EnsureTables(ctx, db); err != nil {
		return pos, classify(err)
	}
	if err := a.loadJoins(ctx, db, pos.EndLSN); err != nil {
		return pos, err
	}
	if err := conn.Exec(ctx, ensureHeldSQL(a.cfg.Store)).Close(); err != nil {
		return pos, classify(fmt.Errorf("create the table of holds on the target: %w", err))
	}
	for name, sql := range map[string]string{checkpointLockStmt: a.cfg.Store.LockSQL(), checkpointAdvanceStmt: a.cfg.Store.AdvanceSQL()} {
		if _, err := conn.Prepare(ctx, name, sql, nil); err != nil {
			return pos, classify(fmt.Errorf("prepare checkpoint statement: %w", err))
		}
	}
	return pos, nil
}

// Stats counts what an Applier committed.
type Stats struct {
	Transactions, Changes, Batches int
	// Busy is the time spent waiting while the target worked; Idle the
	// time spent waiting for the stream with nothing sent to the target.
	Busy, Idle time.Duration
}

// Stats returns the totals committed so far.
func (a *Applier) Stats() Stats { return a.stats }

// ReplicaMode reports whether triggers and FK checks are off during apply.
func (a *Applier) ReplicaMode() bool { return a.replicaMode }

// Waiting is how long the statements now running on the target have been
// waiting for it (0 when none run), and the target session's process ID,
// to look up what blocks it. Safe to call from any goroutine.
func (a *Applier) Waiting() (time.Duration, uint32) {
	at := a.executing.Load()
	if at == 0 {
		return 0, a.conn.PID()
	}
	return time.Since(time.Unix(0, at)), a.conn.PID()
}

// Position is the checkpoint last committed on the target: where streaming
// resumes. Once Run has returned nil it is durable there too.
func (a *Applier) Position() checkpoint.Position { return a.b.applied }

// Close waits up to ShutdownTimeout for the statements in flight, then
// closes the target connection; an open batch is rolled back.
func (a *Applier) Close() {
	timer := time.AfterFunc(a.cfg.ShutdownTimeout, a.stopExec)
	defer timer.Stop()
	_ = a.await()
	a.stopExec()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.conn.Close(ctx)
	if a.source != nil {
		a.source.Close(ctx)
	}
}

// Run applies events until the stream ends, ctx ends or (with StopAt) the
// checkpoint reaches StopAt. On ctx's end it commits the batch when it holds
// only whole source transactions and rolls it back otherwise. Before it
// returns nil it waits until every committed batch is durable on the
// target. Each applied and each durable position is passed to ack.
func (a *Applier) Run(ctx context.Context, events <-chan stream.Event, ack Acker) error {
	a.ack = ack
	if err := a.run(ctx, events); err != nil {
		return err
	}
	return a.flushAll()
}

func (a *Applier) run(ctx context.Context, events <-chan stream.Event) error {
	if a.b.reachedStop() {
		return nil
	}
	heartbeat := time.NewTicker(time.Second)
	defer heartbeat.Stop()
	for {
		if a.cfg.Heartbeat != nil {
			a.cfg.Heartbeat()
		}
		if ctx.Err() != nil {
			return a.shutdown()
		}
		var ev stream.Event
		var ok bool
		if a.b.idleClose() && a.cfg.StopAt == 0 && a.targetFree() {
			// A daemon between source transactions whose target has finished
			// every batch sent: commit now, so that under constant load a
			// batch grows only while the target is busy, not until its delay
			// expires. A catch-up run keeps filling its batches.
			if err := a.commit(ctx); err != nil {
				return err
			}
			continue
		}
		if a.b.idleClose() {
			// Between source transactions with a batch open: take more work if
			// it is waiting, otherwise commit now so lag stays low.
			select {
			case ev, ok = <-events:
			default:
				if err := a.commit(ctx); err != nil {
					return err
				}
				if a.b.reachedStop() {
					return nil
				}
				continue
			}
		} else {
			select {
			case ev, ok = <-events:
			default:
				// Wait for the stream; meanwhile acknowledge each pipeline in
				// flight as it finishes, so an idle stream is not left behind.
				// (Waiting for all of them first would stop reading while the
				// target works.)
				var finished <-chan struct{}
				if len(a.flights) > 0 {
					finished = a.flights[0].finished
				}
				idleLSN, due := a.idleTimer()
				poll := a.flushPoll()
				waitStart := time.Now()
				select {
				case ev, ok = <-events:
					a.countWait(time.Since(waitStart), finished != nil)
				case <-finished:
					a.countWait(time.Since(waitStart), true)
					if err := a.awaitOldest(); err != nil {
						return err
					}
					if a.b.reachedStop() {
						return nil
					}
					continue
				case <-ctx.Done():
					return a.shutdown()
				case <-due:
					// A keepalive position held back by the rate limit is due.
					ev, ok = stream.Event{KeepaliveLSN: idleLSN}, true
				case <-poll:
					a.countWait(time.Since(waitStart), false)
					if err := a.pollFlush(); err != nil {
						return err
					}
					continue
				case <-heartbeat.C:
					continue
				}
			}
		}
		if !ok {
			if ctx.Err() != nil {
				return a.shutdown()
			}
			return fmt.Errorf("apply %s: %w", a.cfg.Database, ErrStreamEnded)
		}
		if err := a.handle(ctx, ev); err != nil {
			return err
		}
		if a.b.reachedStop() {
			return nil
		}
	}
}

// targetFree reports whether every pipeline sent has finished (they run in
// order, so the last one has).
func (a *Applier) targetFree() bool {
	if len(a.flights) == 0 {
		return true
	}
	select {
	case <-a.flights[len(a.flights)-1].finished:
		return true
	default:
		return false
	}
}

// countWait books time spent waiting for the stream: as target time when
// statements were in flight, as idle time otherwise.
func (a *Applier) countWait(d time.Duration, targetWorking bool) {
	if targetWorking {
		a.stats.Busy += d
	} else {
		a.stats.Idle += d
	}
}

// ErrStreamEnded means the stream closed its channel: its own error says why.
var ErrStreamEnded = errors.New("stream ended")

// shutdown ends a run on request: a batch of whole source transactions is
// committed, a partly read source transaction is rolled back (it comes again
// from the checkpoint). Statements still running after ShutdownTimeout are
// abandoned: the target rolls their transaction back.
func (a *Applier) shutdown() error {
	timer := time.AfterFunc(a.cfg.ShutdownTimeout, a.stopExec)
	defer timer.Stop()
	ctx := a.execCtx
	if a.b.idleClose() {
		if err := a.commit(ctx); err != nil {
			return err
		}
		return a.await()
	}
	if a.b.open {
		a.rollback(ctx)
	}
	return a.await()
}

func (a *Applier) handle(ctx context.Context, ev stream.Event) error {
	if ev.Msg == nil {
		return a.keepalive(ctx, ev.KeepaliveLSN)
	}
	switch m := ev.Msg.(type) {
	case *stream.Begin:
		a.txnFinal = m.FinalLSN
		a.streamPos = ev.LSN // the transaction's first WAL record
		if a.streamPos == 0 {
			a.streamPos = a.b.written
		}
		open, err := a.b.begin(m.FinalLSN, time.Now())
		if err != nil {
			return fmt.Errorf("apply %s: %w", a.cfg.Database, err)
		}
		if open {
			a.begin()
		}
	case *stream.Commit:
		closeNow, err := a.b.commit(m.EndLSN, m.CommitTime, time.Now())
		if err != nil {
			return fmt.Errorf("apply %s: %w", a.cfg.Database, err)
		}
		if a.commitAfterTxn && a.b.idleClose() {
			a.commitAfterTxn, closeNow = false, true
		}
		if closeNow {
			return a.commit(ctx)
		}
	case *stream.Relation:
		if a.captureRelation(m) {
			return nil // the capture table of --ddl-capture (ddl.go)
		}
		if err := a.checkCopied(a.copyName(m.ID, m.Namespace+"."+m.Name)); err != nil {
			return err
		}
		if a.inCopy(a.copyName(m.ID, m.Namespace+"."+m.Name)) {
			// Compared with the target before the table's first applied change.
			r := newRelation(m)
			r.deferred = true
			a.rels[m.ID] = r
			return nil
		}
		// A table's shape may change: what was merged under the old shape
		// is written first.
		if err := a.emitMerged(ctx); err != nil {
			return err
		}
		if err := a.flush(ctx); err != nil {
			return err
		}
		r, err := a.relate(ctx, m)
		if err != nil {
			return err
		}
		a.rels[m.ID] = r
	case *stream.Insert, *stream.Update, *stream.Delete, *stream.Truncate:
		a.streamPos = max(a.streamPos, ev.LSN)
		apply, err := a.b.change()
		if err != nil {
			return fmt.Errorf("apply %s: change at %s: %w", a.cfg.Database, ev.LSN, err)
		}
		if !apply {
			return nil
		}
		msg, err := a.captureMessage(ctx, ev.Msg)
		if err != nil || msg == nil {
			return err
		}
		if msg, err = a.admit(ctx, msg); err != nil || msg == nil {
			return err
		}
		if err := a.change(ctx, msg); err != nil {
			return err
		}
		if a.merged.bytes >= a.cfg.PipelineBytes || a.merged.count >= a.cfg.MaxBatchChanges {
			if err := a.emitMerged(ctx); err != nil {
				return err
			}
		}
		if a.pipe.full(a.cfg.PipelineStatements, a.cfg.PipelineBytes) {
			return a.flush(ctx)
		}
	case *stream.LogicalMessage:
		if !m.Transactional && m.Prefix == stream.FenceMessagePrefix {
			// A cutover waits for the checkpoint to pass this mark: the
			// next keepalive is checkpointed at once.
			a.b.hurry()
		}
	case *stream.Origin, *stream.Type:
		// Origins name where a change first came from; types are looked
		// up in the source catalog by OID when needed.
	default:
		return fmt.Errorf("apply %s: unexpected message %T", a.cfg.Database, m)
	}
	return nil
}

// keepalive moves the checkpoint over WAL that carried nothing for us, so an
// idle publication does not pin WAL on the source (the batcher decides when).
func (a *Applier) keepalive(ctx context.Context, lsn pglogrepl.LSN) error {
	if !a.b.keepalive(lsn, time.Now(), keepaliveCheckpointEvery) {
		return nil
	}
	a.begin()
	return a.commit(ctx)
}

// idleTimer returns a held-back keepalive position and a channel that fires
// when it is due to be checkpointed; nil (never fires) when there is none.
func (a *Applier) idleTimer() (pglogrepl.LSN, <-chan time.Time) {
	lsn, at, ok := a.b.idleDue(keepaliveCheckpointEvery)
	if !ok {
		return 0, nil
	}
	return lsn, time.After(time.Until(at))
}

// begin queues the opening of a target transaction: BEGIN, then the lock on
// the slot's checkpoint row, taken only while the row still holds the
// position this applier last wrote. A second writer on the same migration
// waits here for the first one's transaction, then finds the position moved
// and stops before changing anything.
func (a *Applier) begin() {
	a.pipe.add("BEGIN", "", nil, stmtInfo{})
	a.pipe.add("", checkpointLockStmt, a.cfg.Store.LockParams(a.cfg.Slot, a.b.written), stmtInfo{op: "lock checkpoint", want: 1, checkpoint: true})
	if !a.replicaMode {
		// Foreign keys are checked when the batch commits, as the source
		// checked them at the end of each statement (see hold.go).
		a.pipe.add("SET CONSTRAINTS ALL DEFERRED", "", nil, stmtInfo{})
	}
}

// Names of the prepared checkpoint statements.
const (
	checkpointLockStmt    = "seren_checkpoint_lock"
	checkpointAdvanceStmt = "seren_checkpoint_advance"
)

// commit queues the checkpoint write after the batch and sends it; COMMIT
// follows once every statement's row count checked out (execute), and the
// position becomes the checkpoint once the target confirms (await), and is
// acknowledged once the target's WAL is flushed past the commit (durable.go).
// Catch-up waits for both at its end.
func (a *Applier) commit(ctx context.Context) error {
	if err := a.emitMerged(ctx); err != nil {
		return err
	}
	prev, pos, txns, changes, err := a.b.close()
	if err != nil {
		return fmt.Errorf("apply %s: %w", a.cfg.Database, err)
	}
	if err := a.runPending(ctx, pos.EndLSN); err != nil {
		return err
	}
	a.pipe.add("", checkpointAdvanceStmt, a.cfg.Store.AdvanceParams(prev, pos), stmtInfo{op: "advance checkpoint", want: 1, checkpoint: true})
	a.pipe.commit = &committed{pos: pos, txns: txns, changes: changes, rows: a.rowCounts, started: a.b.opened}
	a.syncIfDue()
	a.rowCounts = map[[3]string]int{}
	if err := a.flush(ctx); err != nil {
		return err
	}
	if a.cfg.StopAt != 0 && pos.EndLSN >= a.cfg.StopAt {
		return a.await()
	}
	return nil
}

func (a *Applier) rollback(ctx context.Context) {
	_ = a.await()
	a.pipe = &pipeline{}
	a.merged.reset()
	_ = a.conn.Exec(ctx, "ROLLBACK").Close()
	a.b.abandon()
}
