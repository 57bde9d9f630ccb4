package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/snapshot"
)

// planResume decides what init does with a target an earlier init left
// unfinished: resume it when its slot is still on the source and some
// table's copy completed, otherwise start over (the reason is logged when
// the target is reset).
func (c *InitCmd) planResume(ctx context.Context, a *initTarget) error {
	rp, err := snapshot.PlanResume(ctx, a.db, c.CheckpointSchema, c.SlotFor(a.db.Name))
	if err != nil {
		return err
	}
	started := a.state.Unfinished.Local().Format(time.DateTime)
	if !rp.Resumable() {
		a.reset, a.note = true, fmt.Sprintf("start over (unfinished init from %s: %s)", started, rp.Reason)
		a.whyNotResume = rp.Reason
		return nil
	}
	a.resume = &rp
	a.note = fmt.Sprintf("resume (unfinished init from %s): keep %d %s, copy %d again",
		started, len(rp.Kept), plural(len(rp.Kept), "table"), len(rp.Copy))
	return nil
}

// resumeDatabase finishes an unfinished init of one database, saying first
// which tables keep their copy and which are copied again.
func (c *InitCmd) resumeDatabase(ctx context.Context, env *Env, a initTarget, o snapshot.Options) (snapshot.Result, error) {
	rp := *a.resume
	fmt.Fprintf(env.Stdout, "\nResuming the unfinished init of %s (slot %s, consistent point %s).\n", a.db.Name, o.Slot, rp.ConsistentPoint)
	fmt.Fprintf(env.Stdout, "  kept (copy complete): %s\n", tableList(rp.Kept))
	fmt.Fprintf(env.Stdout, "  copied again:         %s\n", tableList(rp.Copy))
	env.Log.Info("an earlier init of this database did not finish: resuming it", "db", a.db.Name,
		"started", a.state.Unfinished, "kept", len(rp.Kept), "copy_again", len(rp.Copy))
	if o.DDLCapture {
		// The slot exists already: DDL from its consistent point to now
		// was not captured, and is followed from the stream alone.
		if err := installDDLCapture(ctx, a.db, o.Publication, env.Log); err != nil {
			return snapshot.Result{}, err
		}
	}
	return snapshot.ResumeDatabase(ctx, a.db, o, rp)
}

func tableList(ts []selection.Table) string {
	if len(ts) == 0 {
		return "none"
	}
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Qualified()
	}
	return strings.Join(names, ", ")
}

// printResumed says, after the summary, what the resumed inits kept and
// copied again, and how the stream treats the tables copied again.
func printResumed(w io.Writer, results []snapshot.Result) {
	for _, r := range results {
		if !r.Resumed {
			continue
		}
		fmt.Fprintf(w, "\n%s: init resumed. %d %s kept the copy made at %s", r.Database, len(r.Kept), plural(len(r.Kept), "table"), r.ConsistentPoint)
		if len(r.Copied) > 0 {
			fmt.Fprintf(w, "; %d copied again at %s (%s), whose changes before that the stream skips", len(r.Copied), r.CopyLSN, tableList(r.Copied))
		}
		fmt.Fprintln(w, ".")
	}
}
