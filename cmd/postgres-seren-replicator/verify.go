package main

import (
	"context"
	"fmt"
	"time"

	"github.com/serenorg/postgres-seren-replicator/verify"
)

// VerifyCmd compares source and target data.
type VerifyCmd struct {
	Common
	JSON             bool          `name:"json" env:"SEREN_JSON" help:"Print JSON."`
	Jobs             int           `name:"jobs" short:"j" default:"4" env:"SEREN_JOBS" help:"Key ranges compared at once (one session per side each)."`
	ChunkRows        int64         `name:"chunk-rows" default:"50000" env:"SEREN_CHUNK_ROWS" help:"Rows per key range."`
	MaxDiffRows      int           `name:"max-diff-rows" default:"100" env:"SEREN_MAX_DIFF_ROWS" help:"Differing rows to name per table; further differences are reported as ranges."`
	Slot             string        `name:"slot" env:"SEREN_SLOT" help:"Replication slot of the sync verify looks for and waits for (default: derived from the database name, as sync does)."`
	Wait             time.Duration `name:"wait" default:"30s" env:"SEREN_VERIFY_WAIT" help:"While sync runs: how long one comparison waits for the target to apply the source snapshot (0: do not wait)."`
	CheckpointSchema string        `name:"checkpoint-schema" default:"seren_replicator" env:"SEREN_CHECKPOINT_SCHEMA" help:"Target schema holding the checkpoint table."`
	Retries          int           `name:"retries" default:"3" env:"SEREN_VERIFY_RETRIES" help:"While sync runs: how often a differing range is compared again."`
	RecheckTime      time.Duration `name:"recheck-time" default:"2m" env:"SEREN_VERIFY_RECHECK_TIME" help:"While sync runs: total time per database for comparing differences again; differences left unchecked are reported as unconfirmed (0: no re-checks)."`
	JobMetrics
}

// Run compares the selected tables. Exit code 1 when any table differs.
func (c *VerifyCmd) Run(ctx context.Context, env *Env) error {
	switch {
	case c.Jobs < 1:
		return usageError("--jobs must be at least 1, got %d", c.Jobs)
	case c.ChunkRows < 1:
		return usageError("--chunk-rows must be at least 1, got %d", c.ChunkRows)
	case c.MaxDiffRows < 1:
		return usageError("--max-diff-rows must be at least 1, got %d", c.MaxDiffRows)
	case c.Wait < 0:
		return usageError("--wait must not be negative, got %s", c.Wait)
	case c.Retries < 0:
		return usageError("--retries must not be negative, got %d", c.Retries)
	case c.RecheckTime < 0:
		return usageError("--recheck-time must not be negative, got %s", c.RecheckTime)
	}
	jm, err := c.JobMetrics.serve(ctx, env)
	if err != nil {
		return err
	}
	defer jm.close(ctx, env)
	names := Replication{Slot: c.Slot, CheckpointSchema: c.CheckpointSchema}
	p, _, err := c.resolveRecorded(ctx, env, &names, recallWithin)
	if err != nil {
		return err
	}
	c.Slot, c.CheckpointSchema = names.Slot, names.CheckpointSchema
	if c.Slot != "" && len(p.Databases) > 1 {
		return usageError("--slot names one database's slot but %d databases are selected: select one with --include-databases or drop --slot", len(p.Databases))
	}
	v := verify.New()
	v.Jobs, v.ChunkRows, v.MaxDiffRows = c.Jobs, c.ChunkRows, c.MaxDiffRows
	v.Slot, v.Wait, v.Retries, v.RecheckTime = c.Slot, c.Wait, c.Retries, c.RecheckTime
	v.Checkpoint.Schema = c.CheckpointSchema
	v.Log = env.Log
	v.Observer = verifyObserver{jm}
	if isTerminal(env.Stderr) {
		v.Progress = verify.NewBarProgress(env.Stderr)
	} else {
		v.Progress = verify.NewLogProgress(env.Log, 10*time.Second)
	}
	rep := verify.Report{Match: true, Databases: []verify.DatabaseReport{}}
	for _, db := range p.Databases {
		d, err := v.Database(ctx, db)
		if err != nil {
			return fmt.Errorf("verify database %s: %w", db.Name, err)
		}
		rep.Databases = append(rep.Databases, d)
		rep.Match = rep.Match && d.Match()
	}
	if c.JSON {
		err = rep.WriteJSON(env.Stdout)
	} else {
		err = rep.WriteText(env.Stdout)
	}
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if n := rep.Unread(); n > 0 {
		return fmt.Errorf("%w: %d %s could not be read, so not everything was compared (the report says why)", ErrCheckFailed, n, plural(n, "table"))
	}
	if n := rep.Unconfirmed(); n > 0 {
		return fmt.Errorf("%w: source and target data differ; the differences of %d %s were seen while sync applied changes and not confirmed: run verify again (with a longer --recheck-time, or with writes paused) to confirm", ErrCheckFailed, n, plural(n, "table"))
	}
	if !rep.Match {
		return fmt.Errorf("%w: source and target data differ", ErrCheckFailed)
	}
	return nil
}
