package verify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
)

// How one comparison reads the two sides (see the package doc): directly
// when no sync is applying changes to the target, aligned with the
// replication position when one is.

var readOnlyRR = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}

// readDirect reads both sides at once, each in its own snapshot: with no
// sync applying changes, nothing moves on the target, so any moment is as
// good as another.
func readDirect[T any](ctx context.Context, w *worker, read func(context.Context, querier) (T, error)) (src, dst T, err error) {
	done := make(chan error, 1)
	go func() {
		var err error
		src, err = readSnapshot(ctx, w.src, "source", read)
		done <- err
	}()
	dst, err = readSnapshot(ctx, w.dst, "target", read)
	if srcErr := <-done; srcErr != nil {
		return src, dst, srcErr
	}
	return src, dst, err
}

// readSnapshot runs read in a read-only REPEATABLE READ transaction.
func readSnapshot[T any](ctx context.Context, c *pgx.Conn, side string, read func(context.Context, querier) (T, error)) (T, error) {
	tx, err := c.BeginTx(ctx, readOnlyRR)
	if err != nil {
		var zero T
		return zero, fmt.Errorf("begin %s snapshot: %w", side, err)
	}
	defer tx.Rollback(ctx)
	return read(ctx, tx)
}

// sourcePositionSQL is the WAL position that every commit visible in the
// current snapshot precedes. It runs first in the transaction, so the
// snapshot is taken before the position is read. The insert position covers
// asynchronous commits that are visible before their WAL is written.
const sourcePositionSQL = `SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)::text`

// readAligned reads the source in a snapshot, waits (at most wait) for the
// target to have applied that snapshot, then reads the target in a snapshot
// that also reads the checkpoint.
func readAligned[T any](ctx context.Context, st *dbState, w *worker, read func(context.Context, querier) (T, error), wait time.Duration) (src, dst T, err error) {
	tx, err := w.src.BeginTx(ctx, readOnlyRR)
	if err != nil {
		return src, dst, fmt.Errorf("begin source snapshot: %w", err)
	}
	var text string
	err = tx.QueryRow(ctx, sourcePositionSQL).Scan(&text)
	if err == nil {
		src, err = read(ctx, tx)
	}
	tx.Rollback(ctx)
	if err != nil {
		return src, dst, err
	}
	lsn, err := pglogrepl.ParseLSN(text)
	if err != nil {
		return src, dst, fmt.Errorf("source position %q: %w", text, err)
	}
	if err := st.waitFor(ctx, w, lsn, wait); err != nil {
		return src, dst, err
	}
	tx, err = w.dst.BeginTx(ctx, readOnlyRR)
	if err != nil {
		return src, dst, fmt.Errorf("begin target snapshot: %w", err)
	}
	defer tx.Rollback(ctx)
	// Reading the checkpoint first fixes the snapshot: the data read next
	// is exactly the state the checkpoint describes.
	if _, err := st.v.Checkpoint.Load(ctx, tx, st.slot); err != nil && !errors.Is(err, checkpoint.ErrNotFound) {
		return src, dst, err
	}
	dst, err = read(ctx, tx)
	return src, dst, err
}

// waitFor waits until the target checkpoint reaches lsn, at most limit
// (Wait, or less when the re-check time is running out). A checkpoint that
// does not move during a whole Wait marks replication as stalled: later
// comparisons no longer wait.
func (st *dbState) waitFor(ctx context.Context, w *worker, lsn pglogrepl.LSN, limit time.Duration) error {
	if limit <= 0 || st.isStalled() {
		return nil
	}
	deadline := time.Now().Add(limit)
	delay := 10 * time.Millisecond
	var first pglogrepl.LSN
	for i := 0; ; i++ {
		pos, err := st.v.Checkpoint.Load(ctx, w.dst, st.slot)
		if errors.Is(err, checkpoint.ErrNotFound) {
			return nil // removed by cleanup meanwhile: nothing to wait for
		}
		if err != nil {
			return err
		}
		if pos.EndLSN >= lsn {
			return nil
		}
		if i == 0 {
			first = pos.EndLSN
		}
		if time.Now().After(deadline) {
			switch {
			case limit < st.v.Wait:
				// The re-check time ran out, not the wait: no verdict on sync.
			case pos.EndLSN == first:
				st.setStalled(pos.EndLSN.String())
			default:
				st.log.Warn("target checkpoint is behind the source snapshot after waiting; comparing anyway",
					"slot", st.slot, "checkpoint", pos.EndLSN, "source", lsn, "waited", limit)
			}
			return nil
		}
		if err := sleep(ctx, delay); err != nil {
			return err
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// recheckLeft is the re-check time the database has left.
func (st *dbState) recheckLeft() time.Duration {
	st.mu.Lock()
	defer st.mu.Unlock()
	left := st.v.RecheckTime - st.rechecked
	if left <= 0 {
		st.recheckCut = true
	}
	return left
}

// spend charges d to the database's re-check time.
func (st *dbState) spend(d time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.rechecked += d
}
