package verify

import (
	"context"
	"strings"
	"time"
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
// and records it. It returns the source rows counted and whether the range
// differs.
func (st *dbState) examine(ctx context.Context, w *worker, job chunkJob) (int64, bool, error) {
	t, r := job.table, job.r
	src, dst, cut, err := compare(ctx, st, w, t, func(ctx context.Context, q querier) (rangeHash, error) {
		return st.hashRange(ctx, q, t, r)
	}, func(a, b rangeHash) bool { return a == b })
	if err != nil {
		return 0, false, err
	}
	t.counted(src.count, dst.count)
	if src == dst {
		return src.count, false, nil
	}
	d := RangeDiff{From: r.from, To: r.to, SourceRows: src.count, TargetRows: dst.count,
		SourceHash: src.sum, TargetHash: dst.sum, Rows: []RowDiff{}, Unconfirmed: cut, order: job.order}
	if len(t.key) > 0 {
		if d.Rows, d.Complete, err = st.narrow(ctx, w, t, r, src, dst, 0); err != nil {
			return src.count, false, err
		}
		if len(d.Rows) == 0 && d.Complete {
			// Every part matched on a closer look: the difference was
			// replication in flight, and both sides hold the same rows, so
			// the range counts the same on both (the first read's target
			// count was of another moment).
			st.log.Debug("difference resolved on closer look", "table", t.ident, "range", FormatRange(t.rep.Key, r.from, r.to))
			t.counted(0, src.count-dst.count)
			return src.count, false, nil
		}
	}
	t.addRange(d)
	return src.count, true, nil
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
		// A sub-range whose re-checks were cut short is narrowed like any
		// other: its rows carry their own verdict.
		s, d, _, err := compare(ctx, st, w, t, func(ctx context.Context, q querier) (rangeHash, error) {
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

// leaf compares a small range row by row and names the differing rows,
// as many as the table's MaxDiffRows still allows.
func (st *dbState) leaf(ctx context.Context, w *worker, t *tableJob, r keyRange) ([]RowDiff, bool, error) {
	src, dst, _, err := compare(ctx, st, w, t, func(ctx context.Context, q querier) ([]keyedHash, error) {
		return st.rowHashes(ctx, q, t, r)
	}, equalRows)
	if err != nil {
		return nil, false, err
	}
	diffs := diffRows(src, dst)
	if st.consistent && len(diffs) > 0 {
		// A range of rows that replication keeps changing may never be seen
		// equal as a whole; each differing row gets its own closer look.
		return st.recheckRows(ctx, w, t, diffs)
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
// each read aligned with the replication position like a range, and names
// them. It stops when the table has MaxDiffRows rows named (complete is then
// false); rows it has no re-check time left for are named as seen, marked
// Unconfirmed.
func (st *dbState) recheckRows(ctx context.Context, w *worker, t *tableJob, diffs []RowDiff) (still []RowDiff, complete bool, err error) {
	for _, d := range diffs {
		if t.full(st.v.MaxDiffRows) {
			return still, false, nil
		}
		same, cut, err := st.recheckRow(ctx, w, t, d)
		if err != nil {
			return nil, false, err
		}
		if same {
			continue
		}
		if t.claim(1, st.v.MaxDiffRows) == 0 {
			return still, false, nil
		}
		d.Unconfirmed = cut
		still = append(still, d)
	}
	return still, true, nil
}

// recheckRow reads one differing row again until both sides agree, at most
// rowRecheckAttempts times and while re-check time is left. cut reports
// that it stopped for lack of time.
func (st *dbState) recheckRow(ctx context.Context, w *worker, t *tableJob, d RowDiff) (same, cut bool, err error) {
	r := keyRange{from: d.Key, exact: true}
	read := func(ctx context.Context, q querier) ([]keyedHash, error) { return st.rowHashes(ctx, q, t, r) }
	for i := 0; i < rowRecheckAttempts; i++ {
		left := st.recheckLeft()
		if left <= 0 {
			return false, true, nil
		}
		started := time.Now()
		if i > 0 {
			if err := sleep(ctx, min(rowRecheckDelay, left)); err != nil {
				return false, false, err
			}
		}
		src, dst, err := readAligned(ctx, st, w, read, min(st.v.Wait, left-time.Since(started)))
		st.spend(time.Since(started))
		if err != nil {
			return false, false, err
		}
		if equalRows(src, dst) {
			return true, false, nil
		}
	}
	return false, false, nil
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
		case !ok, seen[i]:
			// Not on the source, or a second row with the key (the
			// target's table lacks the source's unique key).
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

// compare reads the same thing on both sides. While a sync runs it repeats
// a differing read (Retries times, RetryDelay apart) as long as re-check
// time is left and the table may still name rows; cut reports that the
// result still differs and a repetition was skipped for either reason.
func compare[T any](ctx context.Context, st *dbState, w *worker, t *tableJob,
	read func(context.Context, querier) (T, error), equal func(a, b T) bool) (src, dst T, cut bool, err error) {
	if !st.consistent {
		src, dst, err = readDirect(ctx, w, read)
		return src, dst, false, err
	}
	src, dst, err = readAligned(ctx, st, w, read, st.v.Wait)
	for i := 0; i < st.v.Retries && err == nil && !equal(src, dst); i++ {
		left := st.recheckLeft()
		if left <= 0 || t.full(st.v.MaxDiffRows) {
			return src, dst, true, nil
		}
		started := time.Now()
		t.retried()
		if err := sleep(ctx, min(st.v.RetryDelay, left)); err != nil {
			return src, dst, false, err
		}
		src, dst, err = readAligned(ctx, st, w, read, min(st.v.Wait, left-time.Since(started)))
		st.spend(time.Since(started))
	}
	return src, dst, false, err
}

// sleep pauses for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
