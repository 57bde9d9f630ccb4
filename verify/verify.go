// Package verify compares the data of source and target tables with
// checksums computed inside PostgreSQL, and pinpoints the rows that differ.
//
// # Method
//
// Every table with a primary key (or a replica identity index) is cut into
// key ranges of about Verifier.ChunkRows rows. Boundaries come from a
// TABLESAMPLE SYSTEM sample of the source's keys (a few hundred pages read,
// never a count of the table). Each range is hashed on both sides by one
// aggregate query: the row count and the sum of a 64-bit hash of every row's
// canonical text, ROW(col1, col2, ...)::text over the source's columns in
// order. The sum makes the result independent of row order and physical
// layout; the record text keeps NULL distinct from the empty string ("()"
// versus "(\"\")") and keeps numeric scale (1.0 is not 1.00). Both sessions
// set TimeZone=UTC, DateStyle=ISO, IntervalStyle=postgres,
// extra_float_digits=3 and bytea_output=hex, so every built-in type prints
// the same on both servers; money is compared as numeric. The row hash is
// hashtextextended (fast, built in since PostgreSQL 11); when the two servers
// disagree on a probe value (another architecture) or lack it, md5 is used.
//
// A range whose counts or sums differ is split into Fanout sub-ranges at keys
// read from the side holding more rows, and the sub-ranges are hashed again,
// recursively, until a range holds at most LeafRows rows: then the key and
// row hash of each row are read from both sides and compared, which names
// each row missing on the target, extra on the target or changed. At most
// MaxDiffRows rows are named per table; further differing ranges are
// reported with their row counts only.
//
// Tables without a usable key are compared as one multiset: row count and
// the sum of the row hashes.
//
// # Consistency while replication runs
//
// A running sync holds an advisory lock named after its slot on the target
// for as long as its target session lives (apply.Holder finds it). Verify
// looks for that lock when it starts on a database.
//
// No sync holds it: nothing is being applied to the target, so each
// comparison reads both sides at once, each in a read-only REPEATABLE READ
// snapshot, once. A difference is a difference: there is no waiting and no
// repetition. Should the target checkpoint have moved by the end anyway (a
// sync started, or was between reconnections when verify looked), the
// differences found are marked Unconfirmed and the report says why. Without
// a checkpoint (no replication set up) both sides are read the same way.
//
// A sync holds it: each comparison reads the source in a REPEATABLE READ
// transaction whose first statement records the source's WAL insert
// position L: every transaction visible in that snapshot committed before L.
// Verify then waits (at most Wait) until the target checkpoint's end_lsn is
// at least L, and reads the target in a REPEATABLE READ transaction whose
// snapshot also reads the checkpoint, so the target data seen includes every
// change the source snapshot contains. The target may have applied more
// (commits after L); when the results differ, the comparison is repeated (up
// to Retries times, RetryDelay apart) with fresh snapshots on both sides,
// and each row that still differs is read again on its own the same way (up
// to rowRecheckAttempts times), because a range that replication keeps
// changing may never be seen equal as a whole. Two bounds keep this short:
// re-checks stop for a table once it has MaxDiffRows rows named, and all
// re-checks of a database together (summed over the jobs, waits and pauses
// included) take at most RecheckTime. A difference that a bound kept from
// being compared again is still reported, marked Unconfirmed; nothing is
// reported as matching without having been seen equal.
//
// Guarantee: a range reported as matching was, at one instant of the source
// and one of the target, identical. A confirmed difference was seen in every
// attempt, each made after the target had applied everything the source
// snapshot contained; a row written to continuously can still be reported
// different (a false mismatch) if every attempt saw a newer change on the
// target, so re-run verify (or pause writes) to confirm. When the checkpoint
// does not move for a whole Wait (sync stuck), verify warns and compares
// without waiting from then on.
package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// Defaults for the Verifier settings.
const (
	DefaultJobs        = 4
	DefaultChunkRows   = 50_000
	DefaultLeafRows    = 1_000
	DefaultFanout      = 16
	DefaultMaxDiffRows = 100
	DefaultWait        = 30 * time.Second
	DefaultRetries     = 3
	DefaultRetryDelay  = 500 * time.Millisecond
	DefaultRecheckTime = 2 * time.Minute
	// maxChunksPerTable bounds the plan of a huge table: chunks grow instead.
	maxChunksPerTable = 10_000
)

// Verifier compares databases. Set its fields before calling Database; they
// are read-only afterwards.
type Verifier struct {
	// Jobs is how many ranges are compared at once (one session per side
	// each); default DefaultJobs.
	Jobs int
	// ChunkRows is the target number of rows per top-level range; default DefaultChunkRows.
	ChunkRows int64
	// LeafRows is the size at or below which a differing range is compared
	// row by row; default DefaultLeafRows.
	LeafRows int64
	// Fanout is how many sub-ranges a differing range is split into; default DefaultFanout.
	Fanout int
	// MaxDiffRows is how many differing rows are named per table; default DefaultMaxDiffRows.
	MaxDiffRows int
	// Wait bounds how long one comparison waits for the target checkpoint
	// to reach the source snapshot; default DefaultWait, 0 disables waiting.
	Wait time.Duration
	// Retries is how many times a differing comparison is repeated while
	// a sync runs; default DefaultRetries.
	Retries int
	// RetryDelay is the pause before each retry; default DefaultRetryDelay.
	RetryDelay time.Duration
	// RecheckTime bounds the time one database spends comparing
	// differences again while a sync runs, summed over the jobs; default
	// DefaultRecheckTime, 0 reports differences without re-checking them.
	RecheckTime time.Duration
	// Slot names the checkpoint row to wait for; empty means
	// stream.DefaultSlotName of the database.
	Slot string
	// Checkpoint locates the checkpoint table on the target.
	Checkpoint checkpoint.Store
	// Progress receives progress events; nil means none.
	Progress Progress
	// Observer hears of each top-level range, for metrics; nil means none.
	Observer Observer
	// Log receives warnings; default slog.Default().
	Log *slog.Logger
}

// New returns a Verifier with the default settings.
func New() *Verifier {
	return &Verifier{
		Jobs:        DefaultJobs,
		ChunkRows:   DefaultChunkRows,
		LeafRows:    DefaultLeafRows,
		Fanout:      DefaultFanout,
		MaxDiffRows: DefaultMaxDiffRows,
		Wait:        DefaultWait,
		Retries:     DefaultRetries,
		RetryDelay:  DefaultRetryDelay,
		RecheckTime: DefaultRecheckTime,
	}
}

func (v *Verifier) defaults() {
	if v.Jobs <= 0 {
		v.Jobs = DefaultJobs
	}
	if v.ChunkRows <= 0 {
		v.ChunkRows = DefaultChunkRows
	}
	if v.LeafRows <= 0 {
		v.LeafRows = DefaultLeafRows
	}
	if v.Fanout < 2 {
		v.Fanout = DefaultFanout
	}
	if v.MaxDiffRows <= 0 {
		v.MaxDiffRows = DefaultMaxDiffRows
	}
	if v.Retries < 0 {
		v.Retries = 0
	}
	if v.RecheckTime < 0 {
		v.RecheckTime = 0
	}
	if v.Log == nil {
		v.Log = slog.Default()
	}
	if v.Progress == nil {
		v.Progress = noProgress{}
	}
	if v.Observer == nil {
		v.Observer = noObserver{}
	}
}

// Observer hears of the key ranges verify compares. RangeCompared is
// called from several goroutines.
type Observer interface {
	// RangesPlanned reports the top-level ranges db's tables were split into.
	RangesPlanned(db string, n int)
	// RangeCompared reports one top-level range compared: the source rows
	// it held, and whether it differs (after any re-checks).
	RangeCompared(db string, rows int64, differs bool)
}

type noObserver struct{}

func (noObserver) RangesPlanned(string, int)         {}
func (noObserver) RangeCompared(string, int64, bool) {}

// Database compares every selected table of db. Differences are reported in
// the result, not as an error; tables the target lacks (or whose columns it
// lacks) get status error. The error is for failures that stop the whole
// comparison (lost connection, cancelled context).
func (v *Verifier) Database(ctx context.Context, db plan.Database) (DatabaseReport, error) {
	v.defaults()
	rep := DatabaseReport{Name: db.Name, Source: db.Source.String(), Target: db.Target.String(), Tables: []TableReport{}}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	first, err := openWorker(ctx, db)
	if err != nil {
		return rep, err
	}
	workers := []*worker{first}
	defer func() {
		for _, w := range workers {
			w.close()
		}
	}()

	st := &dbState{v: v, db: db.Name, log: v.Log.With("db", db.Name), slot: v.Slot}
	if st.slot == "" {
		st.slot = stream.DefaultSlotName(db.Name)
	}
	if st.hash, err = chooseHash(ctx, first); err != nil {
		return rep, err
	}
	pos, err := v.Checkpoint.Load(ctx, first.dst, st.slot)
	hasCheckpoint := err == nil
	switch {
	case errors.Is(err, checkpoint.ErrNotFound):
		rep.Consistency = "direct: no checkpoint on the target for slot " + st.slot
	case err != nil:
		return rep, fmt.Errorf("verify %s: %w", db.Name, err)
	default:
		who, busy, err := apply.Holder(ctx, first.dst, st.slot)
		if err != nil {
			return rep, fmt.Errorf("verify %s: %w", db.Name, err)
		}
		if busy {
			st.consistent = true
			rep.Consistency = fmt.Sprintf("sync running (%s): waited for checkpoint of slot %s (at %s when verify started) and re-checked differences", who, st.slot, pos.EndLSN)
		} else {
			rep.Consistency = fmt.Sprintf("direct: no sync running for slot %s (checkpoint at %s)", st.slot, pos.EndLSN)
		}
	}
	rep.Hash = st.hash.name

	var tables []*tableJob
	var chunks []chunkJob
	var estRows int64
	for _, t := range db.Tables {
		if v.Checkpoint.Schema != "" && t.Schema == v.Checkpoint.Schema {
			continue // the tool's own bookkeeping exists on the target only
		}
		tj := &tableJob{rep: TableReport{Schema: t.Schema, Name: t.Name, Key: []string{}, Status: StatusMatch}}
		tables = append(tables, tj)
		if err := st.describe(ctx, first, tj); err != nil {
			if tableLevel(err) {
				tj.fail(err)
				continue
			}
			return rep, err
		}
		ranges, est, err := st.planChunks(ctx, first, tj)
		if err != nil {
			if tableLevel(err) {
				tj.fail(err)
				continue
			}
			return rep, err
		}
		estRows += est
		tj.pending = len(ranges)
		tj.rep.Chunks = len(ranges)
		for i, r := range ranges {
			chunks = append(chunks, chunkJob{table: tj, r: r, order: i})
		}
	}
	v.Observer.RangesPlanned(db.Name, len(chunks))
	v.Progress.Start(db.Name, len(tables), estRows)
	defer v.Progress.Finish()
	for _, tj := range tables {
		if tj.pending == 0 {
			v.Progress.TableDone()
		}
	}

	n := min(v.Jobs, max(1, len(chunks)))
	for len(workers) < n {
		w, err := openWorker(ctx, db)
		if err != nil {
			return rep, err
		}
		workers = append(workers, w)
	}
	queue := make(chan chunkJob)
	errc := make(chan error, len(workers))
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range queue {
				if err := st.runChunk(ctx, w, job); err != nil {
					errc <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, c := range chunks {
		select {
		case queue <- c:
		case <-ctx.Done():
			break feed
		}
	}
	close(queue)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return rep, err
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if st.isStalled() {
		rep.Consistency += "; the checkpoint did not move for a whole wait (sync stuck?), so later ranges were compared without waiting"
	}
	if st.recheckCut {
		rep.Consistency += fmt.Sprintf("; re-checks stopped when the re-check time (%s) ran out, so some differences were not compared again", v.RecheckTime)
	}
	if hasCheckpoint && !st.consistent {
		// Nothing should have moved; if the checkpoint did, a sync applied
		// changes while the sides were read.
		now, err := v.Checkpoint.Load(ctx, first.dst, st.slot)
		if err != nil && !errors.Is(err, checkpoint.ErrNotFound) {
			return rep, fmt.Errorf("verify %s: %w", db.Name, err)
		}
		if err != nil || now.EndLSN != pos.EndLSN {
			rep.Consistency += "; but the checkpoint changed while verify ran (a sync applied changes), so differences may be changes in flight"
			for _, tj := range tables {
				tj.unsure = true
			}
		}
	}
	for _, tj := range tables {
		tj.finish()
		rep.Tables = append(rep.Tables, tj.rep)
	}
	return rep, nil
}

// runChunk compares one top-level range and records the outcome.
func (st *dbState) runChunk(ctx context.Context, w *worker, job chunkJob) error {
	t := job.table
	if t.failed() {
		t.chunkDone(st.v.Progress, 0)
		st.v.Observer.RangeCompared(st.db, 0, false)
		return nil
	}
	rows, differs, err := st.examine(ctx, w, job)
	st.v.Observer.RangeCompared(st.db, rows, differs)
	if err != nil {
		if !tableLevel(err) {
			return fmt.Errorf("verify %s: %w", t.rep.Schema+"."+t.rep.Name, err)
		}
		t.fail(err)
	}
	t.chunkDone(st.v.Progress, rows)
	return nil
}

// tableLevel reports whether err concerns one table (missing on the target,
// a column missing, no permission) rather than the whole run.
func tableLevel(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code[:2] {
	case "42", // undefined table or column, permission denied, datatype mismatch
		"22": // data exception (a key that does not convert on the target)
		return true
	}
	return false
}

// dbState is what the workers of one database share.
type dbState struct {
	v          *Verifier
	db         string
	log        *slog.Logger
	slot       string
	hash       hashFunc
	consistent bool // a sync is running: wait for it and re-check differences
	mu         sync.Mutex
	stalled    bool          // the checkpoint did not move during a whole wait
	rechecked  time.Duration // re-check time spent, bounded by RecheckTime
	recheckCut bool          // a re-check was skipped for lack of time
}

func (st *dbState) isStalled() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.stalled
}

func (st *dbState) setStalled(at string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.stalled {
		st.log.Warn("target checkpoint did not move while waiting although a sync holds the writer lock (stuck, or not receiving from the source); comparing without waiting from now on, so ranges written meanwhile may show as different",
			"slot", st.slot, "checkpoint", at, "waited", st.v.Wait)
	}
	st.stalled = true
}

// worker is one source and one target session.
type worker struct {
	src, dst *pgx.Conn
}

// sessionSettings make every type print the same on both servers. The
// search path is the same on both sides too, so type names read from the
// source resolve alike on the target; public stays in it because extension
// types (citext...) usually live there with their comparison operators.
// Row-level security is off: a policy that hid rows from the role would
// make both sides compare a subset, so reading such a table fails instead.
const sessionSettings = `SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';
SET extra_float_digits = 3; SET bytea_output = 'hex'; SET search_path = pg_catalog, public; SET row_security = off`

func openWorker(ctx context.Context, db plan.Database) (*worker, error) {
	src, err := db.Source.Connect(ctx)
	if err != nil {
		return nil, err
	}
	dst, err := db.Target.Connect(ctx)
	if err != nil {
		src.Close(ctx)
		return nil, err
	}
	w := &worker{src: src, dst: dst}
	for _, c := range []*pgx.Conn{src, dst} {
		if err := c.PgConn().Exec(ctx, sessionSettings).Close(); err != nil {
			w.close()
			return nil, fmt.Errorf("set session parameters: %w", err)
		}
	}
	return w, nil
}

func (w *worker) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.src.Close(ctx)
	w.dst.Close(ctx)
}
