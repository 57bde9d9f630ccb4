package preflight

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/snapshot"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// recopyFix is the way out when the source no longer holds the changes a
// migration still needs: init copies everything again from a new slot.
const recopyFix = "copy the data again with init --drop-existing (same --source, --target and table selection), then run sync"

// checkMigration checks the slot of database d. When the target database
// holds a checkpoint for it, init already set the migration up, and sync
// can resume only if the slot still exists on the source, still has its
// WAL, and has not confirmed past the checkpoint (the source would not
// send the changes in between again). Otherwise init is still to run, and
// it refuses a slot that exists (checkNewSlot).
func checkMigration(ctx context.Context, d plan.Database, opts Options) ([]Check, error) {
	slotName := opts.slotFor(d.Name)
	st, err := snapshot.InspectTarget(ctx, d, opts.CheckpointSchema, slotName)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, conninfo.ErrConfig):
		st = snapshot.TargetState{} // no access: the target database check says which
	case errors.As(err, &pgErr) && pgErr.Code == "42501":
		return nil, nil // the checkpoint schema check reports the missing privilege
	case err != nil:
		return nil, fmt.Errorf("target %s: %w", d.Target.Database(), err)
	}
	src, err := d.Source.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer src.Close(context.WithoutCancel(ctx))
	if !st.Initialised {
		return checkNewSlot(ctx, src, d, slotName, opts, !st.Unfinished.IsZero())
	}
	dst, err := d.Target.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	pos, err := checkpoint.Store{Schema: opts.CheckpointSchema}.Load(ctx, dst, slotName)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", d.Target.Database(), err)
	}
	c := Check{Name: "replication slot", Database: d.Name, Status: Pass}
	slot, err := stream.LookupSlot(ctx, src, slotName)
	switch {
	case errors.Is(err, stream.ErrSlotMissing):
		c.Status = Fail
		c.Detail = fmt.Sprintf("the target holds a checkpoint for slot %s (at %s), but the slot does not exist on the source: the changes since the checkpoint are gone", slotName, pos.EndLSN)
		c.Fix = recopyFix
		return []Check{c}, nil
	case err != nil:
		return nil, fmt.Errorf("source %s: %w", d.Name, err)
	}
	switch {
	case slot.WALStatus == "lost":
		c.Status = Fail
		c.Detail = fmt.Sprintf("slot %s was invalidated (wal_status = lost: the source removed WAL it still needed, see max_slot_wal_keep_size); the changes since the checkpoint at %s are gone", slotName, pos.EndLSN)
		c.Fix = recopyFix
	case slot.ConfirmedFlush > pos.EndLSN:
		c.Status = Fail
		c.Detail = fmt.Sprintf("slot %s has confirmed %s but the target checkpoint is at %s: the source will not send the changes in between again", slotName, slot.ConfirmedFlush, pos.EndLSN)
		c.Fix = recopyFix
	case slot.WALStatus == "unreserved":
		c.Status = Warn
		c.Detail = fmt.Sprintf("slot %s retains %s of WAL, more than max_slot_wal_keep_size: the source invalidates it at its next checkpoint unless sync catches up first", slotName, humanBytes(slot.RetainedBytes))
		c.Fix = "start sync now, or raise max_slot_wal_keep_size on the source (ALTER SYSTEM SET max_slot_wal_keep_size = …; SELECT pg_reload_conf();)"
	default:
		c.Detail = fmt.Sprintf("slot %s exists and holds the WAL since the target checkpoint at %s; sync resumes there", slotName, pos.EndLSN)
	}
	return []Check{c}, nil
}

// checkNewSlot checks the names init will create for d, which has no
// migration on its target yet: init refuses a slot that a sync is using,
// and one that exists unless --drop-existing lets it drop the slot, or an
// unfinished init of the same slot is on the target (init resumes it, or
// starts over). An existing
// publication of that name is a warning: init would change its tables,
// which breaks another migration streaming from it.
func checkNewSlot(ctx context.Context, src *pgx.Conn, d plan.Database, slotName string, opts Options, unfinished bool) ([]Check, error) {
	c := Check{Name: "replication slot", Database: d.Name, Status: Pass}
	slot, err := stream.LookupSlot(ctx, src, slotName)
	switch {
	case errors.Is(err, stream.ErrSlotMissing):
		c.Detail = fmt.Sprintf("slot %s does not exist yet; init creates it", slotName)
	case err != nil:
		return nil, fmt.Errorf("source %s: %w", d.Name, err)
	case slot.Active:
		c.Status = Fail
		c.Detail = fmt.Sprintf("slot %s exists and is in use on the source (a sync, or another client, streams from it); init would refuse it", slotName)
		c.Fix = "stop what uses it, or choose another --slot for this migration"
	case opts.DropExisting:
		c.Status = Warn
		c.Detail = fmt.Sprintf("slot %s exists on the source but the target holds no migration for it; init drops it and creates it again", slotName)
	case unfinished:
		c.Status = Warn
		c.Detail = fmt.Sprintf("slot %s exists on the source and an unfinished init of it is on the target; init resumes that init where it can (keeping the tables whose copy completed), else drops the slot and starts over", slotName)
	default:
		c.Status = Fail
		c.Detail = fmt.Sprintf("slot %s already exists on the source but the target holds no migration for it; init would refuse it", slotName)
		c.Fix = "choose another --slot, run cleanup with this --slot if it is left from an abandoned migration, or pass --drop-existing to init (and validate) to drop it"
	}
	checks := []Check{c}
	pub := opts.Publication
	if pub == "" {
		pub = stream.PublicationName(slotName)
	}
	var exists bool
	if err := src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, pub).Scan(&exists); err != nil {
		return nil, fmt.Errorf("source %s: look up publication %s: %w", d.Name, pub, err)
	}
	if exists {
		checks = append(checks, Check{Name: "publication", Database: d.Name, Status: Warn,
			Detail: fmt.Sprintf("publication %s already exists on the source; init sets its tables to this selection, which breaks any other migration streaming from it", pub),
			Fix:    "if another migration uses it, choose another --publication (or leave --publication out: each slot then gets its own)"})
	}
	return checks, nil
}
