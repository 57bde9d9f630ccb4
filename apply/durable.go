package apply

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// The apply session commits with synchronous_commit = off: a COMMIT returns
// before its WAL is flushed, so a batch is visible on the target at once but
// survives a target crash only once the target's WAL is flushed past its
// commit record. A crash loses whole batches, never part of one, and the
// checkpoint row travels with the data, so the target then resumes from an
// older checkpoint of its own; the source still has that WAL only if no
// acknowledgement went beyond what the target had flushed.
//
// ackQueue decides what may be acknowledged. For each committed batch it
// keeps a target WAL position at or after the end of the batch's commit
// record (pg_current_wal_insert_lsn() read after COMMIT on the same session)
// and acknowledges a batch's source position once the target reports its
// WAL flushed at least that far (pg_current_wal_flush_lsn()). WAL is
// flushed in order, so every batch before a flushed one is flushed too. It
// does no I/O and reads no clock; durable_test.go checks it against a model
// target that loses its unflushed WAL in crashes.
type ackQueue struct {
	pending []unflushed // committed, not known flushed; in commit order
	acked   pglogrepl.LSN
}

// unflushed is one committed batch whose commit may not be flushed yet.
type unflushed struct {
	end    pglogrepl.LSN // the source position its checkpoint row holds
	commit pglogrepl.LSN // target WAL position at or past its commit record's end
	at     time.Time     // when it committed
}

func newAckQueue(durable pglogrepl.LSN) *ackQueue { return &ackQueue{acked: durable} }

// committed records a batch that committed on the target without waiting
// for its WAL flush: end is the source position it checkpointed, commit a
// target WAL position at or past the end of its commit record.
func (q *ackQueue) committed(end, commit pglogrepl.LSN, at time.Time) error {
	last := q.acked
	if n := len(q.pending); n > 0 {
		last = q.pending[n-1].end
	}
	if end <= last {
		return fmt.Errorf("batch committed at %s after one at %s", end, last)
	}
	q.pending = append(q.pending, unflushed{end: end, commit: commit, at: at})
	return nil
}

// flushed takes a target WAL position the target reported flushed and
// returns the newest source position that may now be acknowledged; ok is
// false when that did not move.
func (q *ackQueue) flushed(flush pglogrepl.LSN) (ack pglogrepl.LSN, ok bool) {
	n := 0
	for n < len(q.pending) && q.pending[n].commit <= flush {
		n++
	}
	return q.pop(n)
}

// durable records that the batch that checkpointed end committed with its
// WAL flushed (synchronous_commit = on for it, or the flush of a later
// commit): it and every batch before it may be acknowledged.
func (q *ackQueue) durable(end pglogrepl.LSN) (ack pglogrepl.LSN, ok bool) {
	n := 0
	for n < len(q.pending) && q.pending[n].end <= end {
		n++
	}
	return q.pop(n)
}

func (q *ackQueue) pop(n int) (pglogrepl.LSN, bool) {
	if n == 0 {
		return q.acked, false
	}
	q.acked = q.pending[n-1].end
	q.pending = append(q.pending[:0], q.pending[n:]...)
	return q.acked, true
}

// waiting reports whether a committed batch is not yet acknowledged.
func (q *ackQueue) waiting() bool { return len(q.pending) > 0 }

// overdue reports whether the oldest batch not yet acknowledged committed
// more than after ago: its flush is then forced rather than waited for (the
// target's WAL writer may be configured to take long).
func (q *ackQueue) overdue(now time.Time, after time.Duration) bool {
	return len(q.pending) > 0 && now.Sub(q.pending[0].at) >= after
}

// How the Applier learns what the target has flushed.
const (
	// commitSQL ends a batch and reads, in the same round trip, a WAL
	// position at or past the end of its commit record and the target's
	// flush position.
	commitSQL = "COMMIT; SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text"
	// ackPollEvery is how often an idle applier asks how far the target's
	// WAL is flushed while a committed batch waits for it (the WAL writer
	// flushes within a few wal_writer_delay, 200 ms by default).
	ackPollEvery = 100 * time.Millisecond
	// forceFlushAfter is how long a committed batch may wait for the WAL
	// writer before the applier flushes it with a synchronous commit.
	forceFlushAfter = time.Second
)

// checkStandbys keeps synchronous_commit = on where the target has
// synchronous standbys: a commit then also waits for them, as it did when
// the migration started, and synchronous_commit = off would skip that wait.
func (a *Applier) checkStandbys(ctx context.Context) error {
	res, err := a.conn.Exec(ctx, "SHOW synchronous_standby_names").ReadAll()
	if err != nil {
		return classify(fmt.Errorf("set up target session: %w", err))
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || strings.TrimSpace(string(res[0].Rows[0][0])) == "" {
		return nil
	}
	if err := a.conn.Exec(ctx, "SET synchronous_commit = on").Close(); err != nil {
		return classify(fmt.Errorf("set up target session: %w", err))
	}
	a.syncCommit = true
	return nil
}

// syncIfDue makes the batch being closed commit synchronously when the
// session always does, or when the oldest batch not yet acknowledged has
// waited forceFlushAfter for the WAL writer.
func (a *Applier) syncIfDue() {
	if !a.syncCommit && !a.acks.overdue(time.Now(), forceFlushAfter) {
		return
	}
	a.pipe.commit.sync = true
	if !a.syncCommit {
		a.pipe.add("SET LOCAL synchronous_commit = on", "", nil, stmtInfo{})
	}
}

// batchCommitted passes a committed batch's position to the acker as
// applied, and as flushed what the target's flush position now covers.
func (a *Applier) batchCommitted(c *committed) error {
	if err := a.acks.committed(c.pos.EndLSN, c.commitLSN, c.pos.AppliedAt); err != nil {
		return fmt.Errorf("apply %s: %w", a.cfg.Database, err)
	}
	if a.ack != nil {
		a.ack.SetApplied(c.pos.EndLSN)
	}
	if c.sync {
		a.acknowledge(a.acks.durable(c.pos.EndLSN))
	} else {
		a.acknowledge(a.acks.flushed(c.flushLSN))
	}
	return nil
}

// acknowledge passes a newly durable position to the acker and schedules
// the next flush poll while batches still wait.
func (a *Applier) acknowledge(lsn pglogrepl.LSN, moved bool) {
	if moved && a.ack != nil {
		a.ack.SetFlushed(lsn)
	}
	switch {
	case !a.acks.waiting():
		a.pollAt = time.Time{}
	case a.pollAt.IsZero():
		a.pollAt = time.Now().Add(ackPollEvery)
	}
}

// flushPoll fires when the target is to be asked how far its WAL is
// flushed: while a committed batch waits and no statements are in flight
// (a commit in flight brings the flush position with it). Nil never fires.
func (a *Applier) flushPoll() <-chan time.Time {
	if !a.acks.waiting() || len(a.flights) > 0 || a.pollAt.IsZero() {
		return nil
	}
	return time.After(time.Until(a.pollAt))
}

// pollFlush asks the target how far its WAL is flushed, or flushes it when
// the oldest waiting batch is overdue and no target transaction is open.
// Called with no statements in flight.
func (a *Applier) pollFlush() error {
	a.pollAt = time.Time{}
	ctx, cancel := context.WithTimeout(a.execCtx, a.cfg.ShutdownTimeout)
	defer cancel()
	if !a.b.open && a.acks.overdue(time.Now(), forceFlushAfter) {
		return a.syncFlush(ctx)
	}
	res, err := a.conn.Exec(ctx, "SELECT pg_current_wal_flush_lsn()::text").ReadAll()
	if err != nil {
		return classify(fmt.Errorf("read the target's WAL flush position: %w", err))
	}
	if len(res) != 1 {
		return fmt.Errorf("read the target's WAL flush position: %d results", len(res))
	}
	flush, err := walPositions(res[0], 1)
	if err != nil {
		return err
	}
	a.acknowledge(a.acks.flushed(flush[0]))
	return nil
}

// syncFlush makes every committed batch durable and acknowledges it. It
// runs a transaction of its own: no target transaction may be open.
func (a *Applier) syncFlush(ctx context.Context) error {
	flush, err := a.flushWAL(ctx, a.b.written)
	if err != nil {
		return err
	}
	a.acknowledge(a.acks.flushed(flush))
	return nil
}

// flushWAL flushes the target's WAL past every commit made so far, by
// anyone, and returns the flush position. It commits a transaction that
// locks the checkpoint row, which holds at: a commit waits for its flush
// under synchronous_commit = on only when its transaction wrote WAL, and a
// row lock does. setUp calls it after loading the checkpoint: the run that
// wrote it may have been killed before its commit was flushed, and the
// stream reports the position it starts from to the source as flushed.
func (a *Applier) flushWAL(ctx context.Context, at pglogrepl.LSN) (pglogrepl.LSN, error) {
	var b pgconn.Batch
	b.ExecParams("BEGIN", nil, nil, nil, nil)
	b.ExecParams("SET LOCAL synchronous_commit = on", nil, nil, nil, nil)
	b.ExecParams(a.cfg.Store.LockSQL(), a.cfg.Store.LockParams(a.cfg.Slot, at), nil, nil, nil)
	b.ExecParams("COMMIT", nil, nil, nil, nil)
	b.ExecParams("SELECT pg_current_wal_flush_lsn()::text", nil, nil, nil, nil)
	res, err := a.conn.ExecBatch(ctx, &b).ReadAll()
	if err != nil {
		return 0, classify(fmt.Errorf("flush the target's WAL: %w", err))
	}
	if len(res) != 5 || res[3].CommandTag.String() != "COMMIT" {
		return 0, fmt.Errorf("flush the target's WAL: unexpected results")
	}
	if res[2].CommandTag.RowsAffected() != 1 {
		return 0, fmt.Errorf("flush the target's WAL: lock checkpoint: %w", ErrCheckpointMoved)
	}
	flush, err := walPositions(res[4], 1)
	if err != nil {
		return 0, err
	}
	return flush[0], nil
}

// flushAll makes every committed batch durable and acknowledged before a
// run ends cleanly: a catch-up that exits 0 leaves a durable checkpoint,
// and a stopped daemon's last position reaches the source.
func (a *Applier) flushAll() error {
	if !a.acks.waiting() {
		return nil
	}
	if a.b.open || len(a.flights) > 0 {
		return fmt.Errorf("apply %s: flush with a batch open", a.cfg.Database)
	}
	ctx, cancel := context.WithTimeout(a.execCtx, a.cfg.ShutdownTimeout)
	defer cancel()
	if err := a.syncFlush(ctx); err != nil {
		return fmt.Errorf("apply %s: %w", a.cfg.Database, err)
	}
	if a.acks.waiting() {
		return fmt.Errorf("apply %s: the target's WAL is not flushed past its last commit after a synchronous commit", a.cfg.Database)
	}
	return nil
}

// walPositions parses a result of one row of n LSNs in text form.
func walPositions(r *pgconn.Result, n int) ([]pglogrepl.LSN, error) {
	if len(r.Rows) != 1 || len(r.Rows[0]) != n {
		return nil, fmt.Errorf("read the target's WAL positions: %d rows where one of %d columns was expected", len(r.Rows), n)
	}
	lsns := make([]pglogrepl.LSN, n)
	for i, v := range r.Rows[0] {
		lsn, err := pglogrepl.ParseLSN(string(v))
		if err != nil {
			return nil, fmt.Errorf("read the target's WAL positions: %w", err)
		}
		lsns[i] = lsn
	}
	return lsns, nil
}
