package preflight

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// recopyFix is the way out when the source no longer holds the changes a
// migration still needs: init copies everything again from a new slot.
const recopyFix = "copy the data again with init --drop-existing (same --source, --target and table selection), then run sync"

// checkMigration checks the slot of a migration that init already set up,
// which is when the target database holds a checkpoint for the slot: sync
// can resume only if the slot still exists on the source, still has its WAL,
// and has not confirmed past the checkpoint (the source would not send the
// changes in between again). Without a checkpoint there is no migration
// and no check.
func checkMigration(ctx context.Context, d plan.Database, schema string) ([]Check, error) {
	slotName := stream.DefaultSlotName(d.Name)
	dst, err := d.Target.Connect(ctx)
	if errors.Is(err, conninfo.ErrConfig) {
		return nil, nil // no target database yet, or no access: the target database check says which
	}
	if err != nil {
		return nil, err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	pos, err := checkpoint.Store{Schema: schema}.Load(ctx, dst, slotName)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, checkpoint.ErrNotFound):
		return nil, nil
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
