package main

import (
	"context"
	"errors"

	"github.com/jackc/pglogrepl"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/snapshot"
)

// Indexes and constraints made on the source after a table's copy reach the
// target by definition, from a comparison of the two catalogs when sync
// starts, on each catalog poll and at the end of a catch-up. One is made
// only once the target's checkpoint has passed the source position at which
// it was first seen: before that, the target's rows may not satisfy it yet
// (duplicates the source removed before adding a unique index, rows a new
// foreign key would refuse), and a constraint made too early would also
// refuse changes still in the stream.

// objectWatch remembers, across the attempts of one run, the source position
// at which each missing object was first seen, and the objects that failed.
type objectWatch struct {
	seen   map[string]pglogrepl.LSN
	failed map[string]bool
}

// followObjects compares the migration's tables and makes, on the target,
// the objects that are due. It reports whether it made any (the applier
// must then read the tables again: a new unique index changes how their
// changes may be merged).
func (r *pipelineRunner) followObjects(ctx context.Context) (bool, error) {
	if r.objects.seen == nil {
		r.objects = objectWatch{seen: map[string]pglogrepl.LSN{}, failed: map[string]bool{}}
	}
	src, err := r.db.Source.Connect(ctx)
	if err != nil {
		return false, err
	}
	defer src.Close(context.WithoutCancel(ctx))
	dst, err := r.db.Target.Connect(ctx)
	if err != nil {
		return false, err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	store := checkpoint.Store{Schema: r.cmd.CheckpointSchema}
	states, err := store.LoadTables(ctx, dst, r.slot)
	if err != nil {
		return false, err
	}
	streaming := map[selection.Table]bool{}
	for _, s := range states {
		if s.State == checkpoint.TableStreaming || s.State == checkpoint.TableCopied && len(s.Pending) == 0 {
			streaming[selection.Table{Database: r.db.Name, Schema: s.Schema, Name: s.Name}] = true
		}
	}
	var tables []selection.Table
	for _, t := range r.db.Tables {
		if streaming[t] {
			tables = append(tables, t)
		}
	}
	objs, err := snapshot.MissingObjects(ctx, src, dst, tables)
	if err != nil {
		return false, err
	}
	// Read after the catalogs: each object seen committed before it.
	now, err := currentLSN(ctx, src)
	if err != nil {
		return false, err
	}
	pos, err := store.Load(ctx, dst, r.slot)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return false, nil // not initialised: said elsewhere
	}
	if err != nil {
		return false, err
	}
	made := false
	for _, o := range objs {
		at, ok := r.objects.seen[o.Key]
		if !ok {
			r.objects.seen[o.Key] = now
			at = now
		}
		early := o.Early && (!r.ddlCapture || r.labelMissing) // see pipelineRunner.ddlCapture
		if r.objects.failed[o.Key] || pos.EndLSN < at && !early {
			continue
		}
		if err := o.Make(ctx, dst); err != nil {
			if ctx.Err() != nil {
				return made, ctx.Err()
			}
			r.objects.failed[o.Key] = true
			r.log.Warn("could not make on the target what the source made after the copy (not tried again until sync restarts); make it there by hand",
				"table", o.Table.Qualified(), o.Kind, o.Name, "error", err)
			continue
		}
		made = true
		r.log.Info("made on the target what the source made after the copy", "table", o.Table.Qualified(), o.Kind, o.Name, "sql", o.SQL[0])
	}
	return made, nil
}
