package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/conninfo"
	"github.com/serenorg/postgres-seren-replicator/internal/metrics"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// pipelineRunner streams one database: source → stream → apply →
// checkpoint, reconnecting with backoff after transient failures.
type pipelineRunner struct {
	cmd  *SyncCmd
	db   plan.Database
	slot string
	log  *slog.Logger
	mon  *monitor

	stopAt pglogrepl.LSN // --catch-up target, fixed at the first attempt
	// gone are selected tables the catalog poll found gone from the source
	// (said once).
	gone map[selection.Table]bool
	// recopied counts, per table, the copies again for a schema change DDL
	// could not follow (recopy) since the stream last moved on.
	recopied map[string]recopies
	objects  objectWatch // indexes and constraints to follow (indexes.go)
	// ddlChecked: the DDL capture was set up as --ddl-capture asks
	// (ddlcapture.go), once per run; ddlCapture: the source captures DDL
	// for this migration, so enum labels come with the captured statements
	// in commit order, and the catalog comparison adds them only once the
	// stream has passed them (or at once after labelMissing: the last
	// attempt met a value of a label the target lacks).
	ddlChecked, ddlCapture, labelMissing bool
}

// run streams until ctx ends (nil), the catch-up target is reached (nil) or
// a failure that a retry cannot fix.
func (r *pipelineRunner) run(ctx context.Context) (pipelineResult, error) {
	retry := backoff{max: r.cmd.MaxRetryDelay}
	var total apply.Stats
	for attempt := 1; ; attempt++ {
		started := time.Now()
		res, err := r.once(ctx)
		total.Transactions += res.stats.Transactions
		total.Changes += res.stats.Changes
		total.Batches += res.stats.Batches
		total.Busy += res.stats.Busy
		total.Idle += res.stats.Idle
		res.stats = total
		if err == nil || ctx.Err() != nil {
			return res, nil
		}
		r.labelMissing = apply.IsMissingEnumLabel(err)
		if errors.Is(err, errTablesJoined) {
			attempt = 0 // not a failure: stream again at once, with them
			// Their copy is newer than a catch-up's target: it catches up
			// to a new one, past the copy, so that they are complete (their
			// foreign keys made) when it ends.
			r.stopAt = 0
			continue
		}
		var recopy *apply.RecopyError
		if errors.As(err, &recopy) {
			if err := r.recopy(ctx, recopy, res.position.EndLSN); err != nil {
				return res, err
			}
			attempt = 0 // the next attempt copies the table, then streams
			continue
		}
		r.mon.stopped(r.db.Name, err)
		// A connection string that fails from the start (wrong password,
		// missing role or database, unknown host) will not fix itself, nor
		// will a second process on the same migration; later on, the same
		// failures may be passing (a restarting server, our own session of
		// a dropped connection not gone yet).
		if needsAction(err) ||
			attempt == 1 && (errors.Is(err, conninfo.ErrConfig) || errors.Is(err, apply.ErrBusy)) {
			return res, err
		}
		side := metrics.SideTarget
		if errors.Is(err, stream.ErrConnection) {
			side = metrics.SideSource
		}
		r.mon.metrics.Reconnect(r.db.Name, side)
		delay := retry.wait(time.Since(started))
		r.log.Warn("replication interrupted; reconnecting", "retry_in", delay.Round(time.Millisecond).String(), "error", err)
		select {
		case <-ctx.Done():
			return res, nil
		case <-time.After(delay):
		}
	}
}

// errSetup marks a state the user must fix before sync can run (no slot,
// no checkpoint, lost WAL): retrying would only repeat it.
var errSetup = errors.New("replication setup")

func setupError(format string, args ...any) error {
	return &classified{msg: fmt.Sprintf(format, args...), class: errSetup}
}

// once runs one connection's worth of streaming.
func (r *pipelineRunner) once(ctx context.Context) (pipelineResult, error) {
	store := checkpoint.Store{Schema: r.cmd.CheckpointSchema}
	src, err := r.db.Source.Connect(ctx)
	if err != nil {
		return pipelineResult{}, err
	}
	defer src.Close(context.Background())
	if r.cmd.Publication == "" {
		if r.cmd.Publication, err = r.cmd.findPublication(ctx, src, r.slot, r.log); err != nil {
			return pipelineResult{}, err
		}
	}
	if err := r.refreshTables(ctx); err != nil {
		return pipelineResult{}, err
	}
	slot, err := r.checkSlot(ctx, src)
	if err != nil {
		return pipelineResult{}, err
	}
	if err := r.prepareDDLCapture(ctx, src); err != nil {
		return pipelineResult{}, err
	}
	if r.cmd.SchemaChanges == string(apply.SchemaChangesApply) {
		// Before a catch-up's target: what it sees is due when it ends.
		if _, err := r.followObjects(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("comparing the indexes and constraints of source and target failed; will retry", "error", err)
		}
	}
	if r.cmd.CatchUp && r.stopAt == 0 {
		if r.stopAt, err = currentLSN(ctx, src); err != nil {
			return pipelineResult{}, err
		}
	}
	obs := &observer{m: r.mon}
	applier, err := apply.New(ctx, r.db.Target, apply.Config{
		Database:        r.db.Name,
		Slot:            r.slot,
		Source:          r.db.Source,
		Store:           store,
		MaxBatchChanges: r.cmd.MaxBatchChanges,
		MaxBatchDelay:   r.cmd.MaxBatchDelay,
		StopAt:          r.stopAt,
		Observer:        obs,
		Heartbeat:       func() { _ = r.mon.pinger.Ping() },
		SchemaChanges:   apply.SchemaChanges(r.cmd.SchemaChanges),
		Recopy:          r.cmd.SchemaChanges == string(apply.SchemaChangesApply),
		DDLCapture:      r.ddlCapture,
	}, r.log)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return pipelineResult{}, setupError("no checkpoint for slot %s on the target database %s: run init first", r.slot, r.db.Target)
	}
	if err != nil {
		return pipelineResult{}, err
	}
	defer applier.Close()
	pos := applier.Position()
	if slot.ConfirmedFlush > pos.EndLSN {
		// The changes in between are gone from the source: the target would
		// silently miss them.
		return pipelineResult{position: pos}, setupError("replication slot %s is at %s but the target checkpoint is at %s: the changes in between are gone from the source; copy the data again with init --drop-existing",
			r.slot, slot.ConfirmedFlush, pos.EndLSN)
	}
	if _, err := r.finishTables(ctx, pos.EndLSN); err != nil {
		r.log.Warn("a joined table is not complete", "error", err)
	}
	if joined, err := r.joinNewTables(ctx, src); err != nil || joined {
		if err == nil {
			err = errTablesJoined
		}
		return pipelineResult{position: pos}, err
	}
	if err := r.checkPublication(ctx, src); err != nil {
		return pipelineResult{position: pos}, err
	}

	r.cmd.rememberSelection(ctx, r.db.Name, r.log)
	if r.stopAt != 0 && pos.EndLSN >= r.stopAt {
		return pipelineResult{position: pos}, nil
	}
	mode := "ordered (target triggers fire; source commit order keeps foreign keys valid)"
	if applier.ReplicaMode() {
		mode = "replica (session_replication_role = replica: no triggers or FK checks on apply)"
	}
	receiveTimeout := r.receiveTimeout(ctx, src)
	r.log.Info("streaming", "slot", r.slot, "from", pos.EndLSN.String(), "apply_mode", mode, "receive_timeout", receiveTimeout.String())

	streamCfg := stream.Config{
		Slot:           r.slot,
		Publication:    r.cmd.Publication,
		Start:          pos.EndLSN,
		StatusInterval: r.cmd.StatusInterval,
		ReceiveTimeout: receiveTimeout,
	}
	st, err := stream.Open(ctx, r.db.Source, streamCfg, r.log)
	if errors.Is(err, stream.ErrSlotActive) {
		// The applier holds the migration's writer lock, so no live sync
		// streams this slot: its holder is a walsender whose client is gone.
		if err = r.releaseSlot(ctx, src, pos.EndLSN); err == nil {
			st, err = stream.Open(ctx, r.db.Source, streamCfg, r.log)
		}
	}
	if err != nil {
		return pipelineResult{position: pos}, err
	}
	defer st.Close()
	// The stream outlives ctx by a little: it must send the final flush
	// position after the applier's last commit.
	streamCtx, stopStream := context.WithCancel(context.WithoutCancel(ctx))
	streamErr := make(chan error, 1)
	go func() { streamErr <- st.Run(streamCtx) }()
	r.mon.started(r.db.Name)
	// The catalog poll ends this attempt (cleanly, at a transaction
	// boundary) when a table joins the selection.
	applyCtx, stopApply := context.WithCancelCause(ctx)
	defer stopApply(nil)
	hkCtx, stopHousekeeping := context.WithCancel(ctx)
	hkDone := make(chan struct{})
	go func() { defer close(hkDone); r.housekeeping(hkCtx, st, applier, stopApply) }()
	applyErr := applier.Run(applyCtx, st.Events(), st)
	stopHousekeeping()
	stopStream()
	sErr := <-streamErr
	<-hkDone
	res := pipelineResult{position: applier.Position(), stats: applier.Stats()}
	if errors.Is(applyErr, apply.ErrStreamEnded) && sErr != nil {
		return res, sErr
	}
	if applyErr != nil {
		return res, applyErr
	}
	if ctx.Err() == nil && errors.Is(context.Cause(applyCtx), errTablesJoined) {
		return res, errTablesJoined
	}
	if ctx.Err() == nil && r.stopAt == 0 {
		return res, sErr
	}
	return res, nil
}

// releaseSlot ends the walsender left holding the slot by a client that
// vanished (killed, or cut off by the network), which otherwise keeps the
// slot until the source's wal_sender_timeout passes, or forever when it is 0.
func (r *pipelineRunner) releaseSlot(ctx context.Context, src *pgx.Conn, from pglogrepl.LSN) error {
	holder, err := stream.ReleaseSlot(ctx, src, r.slot, r.db.Source.ApplicationName(), 10*time.Second)
	if err != nil {
		return err
	}
	if holder != "" {
		r.log.Warn("ended a walsender left holding the slot by a client that is gone (this process holds the migration's writer lock)",
			"slot", r.slot, "walsender", holder)
	}
	// Whoever held it may have confirmed positions past ours meanwhile (a
	// second deployment on another target with the same slot name): the
	// source would then start after changes this target lacks.
	slot, err := stream.LookupSlot(ctx, src, r.slot)
	if err != nil {
		return err
	}
	if slot.ConfirmedFlush > from {
		return setupError("replication slot %s is at %s but the target checkpoint is at %s: another client confirmed changes this target does not have (is a second migration using slot %s?); copy the data again with init --drop-existing",
			r.slot, slot.ConfirmedFlush, from, r.slot)
	}
	return nil
}

// checkSlot refuses to stream from a slot that is missing or has lost WAL,
// or without the migration's publication.
func (r *pipelineRunner) checkSlot(ctx context.Context, conn *pgx.Conn) (stream.SlotState, error) {
	slot, err := stream.LookupSlot(ctx, conn, r.slot)
	if errors.Is(err, stream.ErrSlotMissing) {
		return slot, setupError("replication slot %s does not exist on the source database %s: copy the data again with init --drop-existing (or run init, if it never ran)", r.slot, r.db.Name)
	}
	if err != nil {
		return slot, err
	}
	if slot.WALStatus == "lost" {
		return slot, setupError("replication slot %s was invalidated (the source removed WAL it needed; see max_slot_wal_keep_size): copy the data again with init --drop-existing", r.slot)
	}
	if slot.Database != r.db.Name {
		return slot, setupError("replication slot %s belongs to database %s, not %s: choose another --slot", r.slot, slot.Database, r.db.Name)
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, r.cmd.Publication).Scan(&exists); err != nil {
		return slot, fmt.Errorf("read publication %s: %w", r.cmd.Publication, err)
	}
	if !exists {
		return slot, setupError("publication %s does not exist in source database %s: copy the data again with init --drop-existing", r.cmd.Publication, r.db.Name)
	}
	return slot, nil
}

// checkPublication makes sure the publication covers exactly the selected
// tables once new ones joined (joinNewTables): a selected table outside it
// would silently not replicate, and a published table outside the
// selection was copied by a different init.
func (r *pipelineRunner) checkPublication(ctx context.Context, conn *pgx.Conn) error {
	published, err := publishedTables(ctx, conn, r.cmd.Publication, r.db.Name)
	if err != nil {
		return err
	}
	for _, t := range r.db.Tables {
		if !published[t] {
			// Dropped before its add and created again since: the next
			// attempt adds it.
			r.log.Info("a selected table is not published yet (created again on the source while being added): adding it", "table", t.Qualified())
			return errTablesJoined
		}
		delete(published, t)
	}
	if len(published) == 0 {
		return nil
	}
	var removed []selection.Table
	for t := range published {
		removed = append(removed, t)
	}
	slices.SortFunc(removed, func(a, b selection.Table) int { return strings.Compare(a.Qualified(), b.Qualified()) })
	if r.cmd.SchemaChanges == string(apply.SchemaChangesStop) {
		return setupError("table %s is in publication %s but not selected: use the same --include/--exclude flags as init, or run sync with --schema-changes=apply to remove it from the migration (its copy on the target is kept)", removed[0], r.cmd.Publication)
	}
	return r.removeTables(ctx, conn, removed)
}

// removeTables takes tables the selection no longer covers out of the
// migration: out of the publication, so the source stops sending their
// changes, with their state set to dropped on the target, whose copy is
// kept as it is at this point of the stream and no longer changes.
func (r *pipelineRunner) removeTables(ctx context.Context, src *pgx.Conn, tables []selection.Table) error {
	dst, err := r.db.Target.Connect(ctx)
	if err != nil {
		return err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	store := checkpoint.Store{Schema: r.cmd.CheckpointSchema}
	states, err := store.LoadTables(ctx, dst, r.slot)
	if err != nil {
		return err
	}
	idents := make([]string, len(tables))
	for i, t := range tables {
		idents[i] = pgx.Identifier{t.Schema, t.Name}.Sanitize()
	}
	if _, err := src.Exec(ctx, "ALTER PUBLICATION "+pgx.Identifier{r.cmd.Publication}.Sanitize()+" DROP TABLE "+strings.Join(idents, ", ")); err != nil {
		return fmt.Errorf("remove %s from publication %s: %w", strings.Join(idents, ", "), r.cmd.Publication, err)
	}
	for _, t := range tables {
		st := checkpoint.Table{Schema: t.Schema, Name: t.Name, State: checkpoint.TableDropped}
		for _, s := range states {
			if s.Schema == t.Schema && s.Name == t.Name {
				st.RelID, st.Pending = s.RelID, s.Pending
			}
		}
		if err := store.SetTable(ctx, dst, r.slot, st); err != nil {
			return err
		}
		r.log.Warn("table removed from the migration (the selection no longer covers it): the source stops sending its changes; its copy on the target is kept and no longer changes", "table", t.Qualified())
	}
	r.cmd.recorded.removedTables()
	return nil
}
