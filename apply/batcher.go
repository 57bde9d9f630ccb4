package apply

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
)

// batcher decides which source transactions go into which target
// transaction (a batch), which are skipped as already applied, and which
// positions are written to the checkpoint and acknowledged to the source. It
// does no I/O and reads no clock: the Applier feeds it the stream's events
// and the time, and does what it answers; batcher_test.go checks it against
// a model under random interleavings of transactions, keepalives, pipeline
// completions and failures.
//
// Three positions are kept apart: applied (committed on the target; it is
// acknowledged once that commit is flushed, see durable.go), written (the
// newest position sent in a checkpoint write, possibly not yet committed)
// and the open batch's end. Checkpoint writes
// form a chain: each goes from the position the previous one wrote to a
// strictly greater one.
type batcher struct {
	maxChanges int
	maxDelay   time.Duration
	stopAt     pglogrepl.LSN

	applied checkpoint.Position
	written pglogrepl.LSN

	inSource bool // a source transaction is being read
	skip     bool // ... and it was applied before
	open     bool // a target transaction is open
	opened   time.Time
	txns     int
	changes  int
	end      pglogrepl.LSN // end LSN the open batch will checkpoint
	commitAt time.Time     // source commit time of the newest transaction queued

	idleLSN  pglogrepl.LSN // keepalive position held back by the rate limit
	lastIdle time.Time     // when the last keepalive-only checkpoint was written
}

func newBatcher(pos checkpoint.Position, maxChanges int, maxDelay time.Duration, stopAt pglogrepl.LSN) *batcher {
	return &batcher{maxChanges: maxChanges, maxDelay: maxDelay, stopAt: stopAt,
		applied: pos, written: pos.EndLSN, commitAt: pos.CommitTime}
}

// begin starts a source transaction whose commit record is at final. It
// returns whether a target transaction must be opened for it.
func (b *batcher) begin(final pglogrepl.LSN, now time.Time) (openTarget bool, err error) {
	if b.inSource {
		return false, fmt.Errorf("Begin of the transaction committing at %s inside an open transaction", final)
	}
	b.inSource = true
	// A transaction whose commit record starts before the last position
	// written was applied already (a position is the end of the last
	// transaction applied).
	b.skip = final < b.written
	if b.skip || b.open {
		return false, nil
	}
	b.openBatch(now)
	return true, nil
}

func (b *batcher) openBatch(now time.Time) {
	b.open = true
	b.opened = now
	b.txns, b.changes = 0, 0
	b.end = b.written
}

// change counts one row change or truncate; it returns false when the change
// belongs to a skipped transaction.
func (b *batcher) change() (apply bool, err error) {
	if !b.inSource {
		return false, fmt.Errorf("change outside a transaction")
	}
	if b.skip {
		return false, nil
	}
	b.changes++
	return true, nil
}

// commit ends the source transaction; it returns whether the batch must be
// closed now (by size, age, or the catch-up target).
func (b *batcher) commit(end pglogrepl.LSN, commitTime time.Time, now time.Time) (closeBatch bool, err error) {
	if !b.inSource {
		return false, fmt.Errorf("Commit at %s without Begin", end)
	}
	b.inSource = false
	if b.skip {
		return false, nil
	}
	b.txns++
	b.end = end
	b.commitAt = commitTime
	return b.changes >= b.maxChanges || now.Sub(b.opened) >= b.maxDelay || b.stopAt != 0 && end >= b.stopAt, nil
}

// keepalive takes a position before which the source has sent everything.
// An open batch extends to it; with no batch open it is checkpointed at most
// once per idleEvery (the rest is held back for idleDue), so an idle
// publication does not pin WAL. It returns true when a batch holding only
// that position was opened and must be closed now.
func (b *batcher) keepalive(lsn pglogrepl.LSN, now time.Time, idleEvery time.Duration) (closeNow bool) {
	if b.inSource || lsn <= b.written || lsn <= b.end {
		return false
	}
	if b.open {
		b.end = lsn
		return false
	}
	catchUpDone := b.stopAt != 0 && lsn >= b.stopAt
	if !catchUpDone && now.Sub(b.lastIdle) < idleEvery {
		b.idleLSN = lsn
		return false
	}
	b.lastIdle = now
	b.idleLSN = 0
	b.openBatch(now)
	b.end = lsn
	return true
}

// hurry lifts the rate limit for the next keepalive-only checkpoint: a
// cutover waits for the position it marked.
func (b *batcher) hurry() { b.lastIdle = time.Time{} }

// idleDue returns the held-back keepalive position and when it is due; ok
// is false when there is none still ahead of what was written, or while a
// transaction or batch is open (a batch's end covers it).
func (b *batcher) idleDue(idleEvery time.Duration) (lsn pglogrepl.LSN, at time.Time, ok bool) {
	if b.inSource || b.open || b.idleLSN <= b.written {
		return 0, time.Time{}, false
	}
	return b.idleLSN, b.lastIdle.Add(idleEvery), true
}

// idleClose reports whether the open batch may be closed because no more
// changes are waiting: only between source transactions.
func (b *batcher) idleClose() bool { return b.open && !b.inSource }

// close ends the open batch: it returns the checkpoint write to queue
// before COMMIT, from the position written last to the batch's end.
func (b *batcher) close() (prev pglogrepl.LSN, next checkpoint.Position, txns, changes int, err error) {
	if !b.open || b.inSource {
		return 0, next, 0, 0, fmt.Errorf("close of a batch that is not open between transactions")
	}
	if b.end <= b.written {
		return 0, next, 0, 0, fmt.Errorf("batch would move the checkpoint from %s to %s", b.written, b.end)
	}
	prev = b.written
	next = checkpoint.Position{Slot: b.applied.Slot, EndLSN: b.end, CommitTime: b.commitAt}
	b.written = b.end
	b.open = false
	return prev, next, b.txns, b.changes, nil
}

// abandon drops the open batch (rolled back on the target); positions
// already written stay as they are.
func (b *batcher) abandon() {
	b.open = false
	b.inSource = false
}

// committed records that the checkpoint write of pos committed on the
// target: pos is applied, and may be acknowledged once that commit is
// flushed.
func (b *batcher) committed(pos checkpoint.Position) error {
	if pos.EndLSN <= b.applied.EndLSN || pos.EndLSN > b.written {
		return fmt.Errorf("commit of checkpoint %s out of order (applied %s, written %s)", pos.EndLSN, b.applied.EndLSN, b.written)
	}
	b.applied = pos
	return nil
}

// reachedStop reports whether a catch-up run is done: its target position
// is applied and no batch is open.
func (b *batcher) reachedStop() bool {
	return b.stopAt != 0 && b.applied.EndLSN >= b.stopAt && !b.open
}
