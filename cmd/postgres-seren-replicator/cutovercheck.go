package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/verify"
)

// Values of --check.
const (
	checkChanged = "changed"
	checkVerify  = "verify"
	checkCounts  = "counts"
	checkNone    = "none"
)

// beforeFence is the comparison made before the fence for --check changed:
// a mark on both sides of each database, then verify of every selected
// table, begun after the mark.
type beforeFence struct {
	marks  []verify.Mark
	before []verify.DatabaseReport
}

// compareBeforeFence marks every database and verifies it while the
// application still writes, then narrows that down from a second mark
// (verify.Narrow). A table it could not read stops the cutover
// here, before anything changes; named rows are compared again at the
// fence, and a table with more differing rows than it names is compared
// there range by range.
func (c *CutoverCmd) compareBeforeFence(ctx context.Context, env *Env, p plan.Plan) (*beforeFence, string, error) {
	b := &beforeFence{}
	for _, db := range p.Databases {
		m, err := verify.MarkNow(ctx, db)
		if err != nil {
			return nil, "", err
		}
		b.marks = append(b.marks, m)
	}
	// One pass, neither waiting for the daemon nor reading a difference
	// again: a row that differs because it is in flight is named and
	// compared at the fence like the rest.
	v := c.verifier(env)
	v.MaxDiffRows = 100_000
	v.Wait, v.Retries, v.RecheckTime = 0, 0, 0
	tables, rows, named := 0, int64(0), int64(0)
	for _, db := range p.Databases {
		v.Slot = c.SlotFor(db.Name)
		d, err := v.Database(ctx, db)
		if err != nil {
			return nil, "", fmt.Errorf("verify database %s: %w", db.Name, err)
		}
		var unusable []string
		for _, t := range d.Tables {
			tables, rows, named = tables+1, rows+t.SourceRows, named+t.DifferingRows
			if t.Status == verify.StatusError {
				unusable = append(unusable, fmt.Sprintf("%s.%s (not compared: %s)", db.Name, t.Qualified(), t.Error))
			}
		}
		if len(unusable) > 0 {
			if err := (verify.Report{Databases: []verify.DatabaseReport{d}}).WriteText(env.Stderr); err != nil {
				env.Log.Warn("write verify report", "err", err)
			}
			return nil, "", fmt.Errorf("%w: verify before the fence: %s: run verify, mend the target (or run init again for these tables), then cut over", ErrCheckFailed, strings.Join(unusable, "; "))
		}
		b.before = append(b.before, d)
	}
	// Rows written during that pass would all wait for the fence: compare
	// them now, from a second mark, so that only what is written from here
	// on, and what still differs, is left for the fence.
	named = 0
	for i, db := range p.Databases {
		m, err := verify.MarkNow(ctx, db)
		if err != nil {
			return nil, "", err
		}
		d, err := v.Narrow(ctx, db, b.marks[i], b.before[i])
		if err != nil {
			return nil, "", fmt.Errorf("verify database %s: %w", db.Name, err)
		}
		for _, t := range d.Tables {
			named += t.DifferingRows
			if t.Status == verify.StatusError {
				return nil, "", fmt.Errorf("%w: verify before the fence: %s.%s (not compared: %s): run verify, mend the target (or run init again for this table), then cut over", ErrCheckFailed, db.Name, t.Qualified(), t.Error)
			}
		}
		b.marks[i], b.before[i] = m, d
	}
	detail := fmt.Sprintf("%d %s, %d rows", tables, plural(tables, "table"), rows)
	if named > 0 {
		detail += fmt.Sprintf("; %d differing %s to compare again at the fence", named, plural(int(named), "row"))
	}
	return b, detail, nil
}

// checkChangedRows compares, with both sides still, every row written since
// the mark and the rows named before the fence, and the rest by number and
// keys (verify.Since); any difference aborts.
func (c *CutoverCmd) checkChangedRows(ctx context.Context, env *Env, p plan.Plan, b *beforeFence) (string, error) {
	v := c.verifier(env)
	rep := verify.Report{Match: true}
	for i, db := range p.Databases {
		d, err := v.Since(ctx, db, b.marks[i], b.before[i])
		if err != nil {
			return "", fmt.Errorf("check database %s: %w", db.Name, err)
		}
		rep.Databases = append(rep.Databases, d)
		rep.Match = rep.Match && d.Match()
	}
	return c.judge(env, rep, "rows written since the comparison before the fence compared one by one")
}

// verifyTables compares every row of every selected table with verify's
// method. The source is fenced and the target at the fence, so nothing
// moves: no comparison waits for the checkpoint, and any difference,
// confirmed or not, aborts.
func (c *CutoverCmd) verifyTables(ctx context.Context, env *Env, p plan.Plan) (string, error) {
	v := c.verifier(env)
	v.Wait = 0
	rep := verify.Report{Match: true}
	for _, db := range p.Databases {
		v.Slot = c.SlotFor(db.Name)
		d, err := v.Database(ctx, db)
		if err != nil {
			return "", fmt.Errorf("verify database %s: %w", db.Name, err)
		}
		rep.Databases = append(rep.Databases, d)
		rep.Match = rep.Match && d.Match()
	}
	return c.judge(env, rep, "equal checksums")
}

// verifier is verify's comparison with the migration's checkpoint schema.
func (c *CutoverCmd) verifier(env *Env) *verify.Verifier {
	v := verify.New()
	v.Checkpoint.Schema = c.CheckpointSchema
	v.Log = env.Log
	return v
}

// judge sums up a comparison at the fence: a detail line when every table
// matched, else verify's report on stderr and an error naming the tables.
func (c *CutoverCmd) judge(env *Env, rep verify.Report, how string) (string, error) {
	tables, rows := 0, int64(0)
	var differ []string
	for _, d := range rep.Databases {
		for _, t := range d.Tables {
			tables, rows = tables+1, rows+t.SourceRows
			if t.Status == verify.StatusMatch {
				continue
			}
			what := fmt.Sprintf("%d differing %s", t.DifferingRows, plural(int(t.DifferingRows), "row"))
			switch {
			case t.Status == verify.StatusError:
				what = "not compared: " + t.Error
			case t.DifferingRows == 0:
				what = fmt.Sprintf("%d rows on the source, %d on the target, or rows not named", t.SourceRows, t.TargetRows)
			}
			differ = append(differ, fmt.Sprintf("%s.%s (%s)", d.Name, t.Qualified(), what))
		}
	}
	if rep.Match {
		return fmt.Sprintf("%d %s, %d rows, %s", tables, plural(tables, "table"), rows, how), nil
	}
	if err := rep.WriteText(env.Stderr); err != nil {
		env.Log.Warn("write verify report", "err", err)
	}
	return "", fmt.Errorf("%w: verify found differences after the drain: %s: the report above names the rows; fix them on the target (or run init again for these tables) before another cutover",
		ErrCheckFailed, strings.Join(differ, "; "))
}

// compareCounts compares every selected table's row count on both sides.
func compareCounts(ctx context.Context, p plan.Plan) (string, error) {
	tables, rows := 0, int64(0)
	for _, db := range p.Databases {
		src, err := db.Source.Connect(ctx)
		if err != nil {
			return "", err
		}
		dst, err := db.Target.ConnectWith(ctx, map[string]string{"row_security": "off"})
		if err != nil {
			src.Close(context.Background())
			return "", err
		}
		var diff []string
		for _, t := range db.Tables {
			q := "SELECT count(*) FROM " + pgx.Identifier{t.Schema, t.Name}.Sanitize()
			var s, d int64
			var serr error
			done := make(chan struct{})
			go func() { defer close(done); serr = src.QueryRow(ctx, q).Scan(&s) }()
			derr := dst.QueryRow(ctx, q).Scan(&d)
			<-done
			err := errors.Join(serr, derr)
			if err != nil {
				src.Close(context.Background())
				dst.Close(context.Background())
				return "", fmt.Errorf("count %s: %w", t, err)
			}
			if s != d {
				diff = append(diff, fmt.Sprintf("%s: %d on the source, %d on the target", t, s, d))
			}
			tables, rows = tables+1, rows+s
		}
		src.Close(context.Background())
		dst.Close(context.Background())
		if len(diff) > 0 {
			return "", fmt.Errorf("%w: row counts differ after the drain: %s: run verify, and re-run init for these tables", ErrCheckFailed, strings.Join(diff, "; "))
		}
	}
	return fmt.Sprintf("%d %s, %d rows, equal counts", tables, plural(tables, "table"), rows), nil
}
