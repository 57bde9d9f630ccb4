package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
)

// chunkJob is one top-level range of a table.
type chunkJob struct {
	table *tableJob
	r     keyRange
	order int
}

// maxDepth bounds the splitting; a range still too big there is compared
// row by row.
const maxDepth = 12

// examine compares one top-level range, narrows a difference down to rows
// and records it. It returns the source rows counted.
func (st *dbState) examine(ctx context.Context, w *worker, job chunkJob) (int64, error) {
	t, r := job.table, job.r
	src, dst, err := compare(ctx, st, w, t, func(ctx context.Context, q querier) (rangeHash, error) {
		return st.hashRange(ctx, q, t, r)
	}, func(a, b rangeHash) bool { return a == b })
	if err != nil {
		return 0, err
	}
	t.counted(src.count, dst.count)
	if src == dst {
		return src.count, nil
	}
	d := RangeDiff{From: r.from, To: r.to, SourceRows: src.count, TargetRows: dst.count,
		SourceHash: src.sum, TargetHash: dst.sum, Rows: []RowDiff{}, order: job.order}
	if len(t.key) > 0 {
		if d.Rows, d.Complete, err = st.narrow(ctx, w, t, r, src, dst, 0); err != nil {
			return src.count, err
		}
		if len(d.Rows) == 0 && d.Complete {
			// Every part matched on a closer look: the difference was
			// replication in flight.
			st.log.Debug("difference resolved on closer look", "table", t.ident, "range", FormatRange(t.rep.Key, r.from, r.to))
			return src.count, nil
		}
	}
	t.addRange(d)
	return src.count, nil
}

// narrow finds the differing rows of a range whose hashes differ. complete
// is false when the table's MaxDiffRows cut the search short.
func (st *dbState) narrow(ctx context.Context, w *worker, t *tableJob, r keyRange, src, dst rangeHash, depth int) (rows []RowDiff, complete bool, err error) {
	if t.full(st.v.MaxDiffRows) {
		return nil, false, nil
	}
	n := max(src.count, dst.count)
	if n <= st.v.LeafRows || depth >= maxDepth {
		return st.leaf(ctx, w, t, r)
	}
	// Cut at keys of the side with more rows, so each part is small on both.
	side := w.src
	if dst.count > src.count {
		side = w.dst
	}
	step := (n + int64(st.v.Fanout) - 1) / int64(st.v.Fanout)
	bounds, err := st.splitKeys(ctx, side, t, r, step)
	if err != nil {
		return nil, false, err
	}
	if len(bounds) == 0 {
		return st.leaf(ctx, w, t, r)
	}
	complete = true
	from := r.from
	for i := 0; i <= len(bounds); i++ {
		sub := keyRange{from: from, to: r.to}
		if i < len(bounds) {
			sub.to = bounds[i]
			from = bounds[i]
		}
		if t.full(st.v.MaxDiffRows) {
			return rows, false, nil
		}
		s, d, err := compare(ctx, st, w, t, func(ctx context.Context, q querier) (rangeHash, error) {
			return st.hashRange(ctx, q, t, sub)
		}, func(a, b rangeHash) bool { return a == b })
		if err != nil {
			return nil, false, err
		}
		if s == d {
			continue
		}
		found, ok, err := st.narrow(ctx, w, t, sub, s, d, depth+1)
		if err != nil {
			return nil, false, err
		}
		rows = append(rows, found...)
		complete = complete && ok
	}
	return rows, complete, nil
}

// leaf compares a small range row by row.
func (st *dbState) leaf(ctx context.Context, w *worker, t *tableJob, r keyRange) ([]RowDiff, bool, error) {
	src, dst, err := compare(ctx, st, w, t, func(ctx context.Context, q querier) ([]keyedHash, error) {
		return st.rowHashes(ctx, q, t, r)
	}, equalRows)
	if err != nil {
		return nil, false, err
	}
	diffs := diffRows(src, dst)
	if st.consistent && len(diffs) > 0 {
		// A range of rows that replication keeps changing may never be seen
		// equal as a whole; each differing row gets its own closer look.
		if diffs, err = st.recheckRows(ctx, w, t, diffs); err != nil {
			return nil, false, err
		}
	}
	n := t.claim(len(diffs), st.v.MaxDiffRows)
	return diffs[:n], n == len(diffs), nil
}

// rowRecheckAttempts is how often one differing row is read again on both
// sides while replication runs, rowRecheckDelay apart.
const (
	rowRecheckAttempts = 10
	rowRecheckDelay    = 100 * time.Millisecond
)

// recheckRows keeps the rows that still differ when read one at a time,
// each read aligned with the replication position like a range.
func (st *dbState) recheckRows(ctx context.Context, w *worker, t *tableJob, diffs []RowDiff) ([]RowDiff, error) {
	var still []RowDiff
	for _, d := range diffs {
		r := keyRange{from: d.Key, exact: true}
		same := false
		for i := 0; i < rowRecheckAttempts && !same; i++ {
			if i > 0 {
				select {
				case <-time.After(rowRecheckDelay):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			src, dst, err := readAligned(ctx, st, w, func(ctx context.Context, q querier) ([]keyedHash, error) {
				return st.rowHashes(ctx, q, t, r)
			})
			if err != nil {
				return nil, err
			}
			same = equalRows(src, dst)
		}
		if !same {
			still = append(still, d)
		}
	}
	return still, nil
}

func equalRows(a, b []keyedHash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].hash != b[i].hash || !equalKey(a[i].key, b[i].key) {
			return false
		}
	}
	return true
}

func equalKey(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// diffRows names the rows that differ: missing and changed rows in source
// key order, then extra rows in target key order. Keys are matched by their
// text, so the comparison does not depend on how Go would order them.
func diffRows(src, dst []keyedHash) []RowDiff {
	idx := make(map[string]int, len(src))
	for i, r := range src {
		idx[strings.Join(r.key, "\x00")] = i
	}
	seen := make([]bool, len(src))
	changed := make([]bool, len(src))
	var extra []RowDiff
	for _, r := range dst {
		i, ok := idx[strings.Join(r.key, "\x00")]
		switch {
		case !ok:
			extra = append(extra, RowDiff{Kind: ExtraOnTarget, Key: r.key})
		default:
			seen[i] = true
			changed[i] = src[i].hash != r.hash
		}
	}
	var out []RowDiff
	for i, r := range src {
		switch {
		case !seen[i]:
			out = append(out, RowDiff{Kind: MissingOnTarget, Key: r.key})
		case changed[i]:
			out = append(out, RowDiff{Kind: Changed, Key: r.key})
		}
	}
	return append(out, extra...)
}

// compare reads the same thing on both sides and repeats while they differ
// and replication may explain it (see the package doc).
func compare[T any](ctx context.Context, st *dbState, w *worker, t *tableJob,
	read func(context.Context, querier) (T, error), equal func(a, b T) bool) (src, dst T, err error) {
	attempts := 1
	if st.consistent {
		attempts += st.v.Retries
	}
	for i := 0; ; i++ {
		if st.consistent {
			src, dst, err = readAligned(ctx, st, w, read)
		} else {
			src, dst, err = readConcurrently(ctx, w, read)
		}
		if err != nil || equal(src, dst) || i == attempts-1 {
			return src, dst, err
		}
		t.retried()
		select {
		case <-time.After(st.v.RetryDelay):
		case <-ctx.Done():
			return src, dst, ctx.Err()
		}
	}
}

// readConcurrently reads both sides at once: without replication, nothing
// moves, so any moment is as good as another.
func readConcurrently[T any](ctx context.Context, w *worker, read func(context.Context, querier) (T, error)) (src, dst T, err error) {
	done := make(chan error, 1)
	go func() {
		var err error
		src, err = read(ctx, w.src)
		done <- err
	}()
	dst, err = read(ctx, w.dst)
	if srcErr := <-done; srcErr != nil {
		return src, dst, srcErr
	}
	return src, dst, err
}

var readOnlyRR = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}

// sourcePositionSQL is the WAL position that every commit visible in the
// current snapshot precedes. It runs first in the transaction, so the
// snapshot is taken before the position is read. The insert position covers
// asynchronous commits that are visible before their WAL is written.
const sourcePositionSQL = `SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)::text`

// readAligned reads the source in a snapshot, waits for the target to have
// applied that snapshot, then reads the target in a snapshot that also reads
// the checkpoint.
func readAligned[T any](ctx context.Context, st *dbState, w *worker, read func(context.Context, querier) (T, error)) (src, dst T, err error) {
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
	if err := st.waitFor(ctx, w, lsn); err != nil {
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

// waitFor waits until the target checkpoint reaches lsn, at most Wait. A
// checkpoint that does not move during a whole wait marks replication as
// stalled: later comparisons no longer wait.
func (st *dbState) waitFor(ctx context.Context, w *worker, lsn pglogrepl.LSN) error {
	if st.v.Wait <= 0 || st.isStalled() {
		return nil
	}
	deadline := time.Now().Add(st.v.Wait)
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
			if pos.EndLSN == first {
				st.setStalled(pos.EndLSN.String())
			} else {
				st.log.Warn("target checkpoint is behind the source snapshot after waiting; comparing anyway",
					"slot", st.slot, "checkpoint", pos.EndLSN, "source", lsn, "waited", st.v.Wait)
			}
			return nil
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}
