package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/ddlcapture"
	"github.com/serenorg/postgres-seren-replicator/internal/pgtools"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
	"github.com/serenorg/postgres-seren-replicator/internal/usertype"
	"github.com/serenorg/postgres-seren-replicator/snapshot"
)

// errTablesJoined ends one streaming attempt so the next starts with tables
// that joined the migration: the applier must load their copy positions.
var errTablesJoined = errors.New("tables joined the migration")

// refreshTables lists the selected tables of the database again: tables
// created on the source since the last attempt are selected as init's
// flags would select them.
func (r *pipelineRunner) refreshTables(ctx context.Context) error {
	tables, err := r.selectedTables(ctx)
	if err != nil {
		return err
	}
	for _, t := range r.db.Tables {
		if !slices.Contains(tables, t) && !r.gone[t] {
			r.log.Warn("table no longer on the source (dropped, or renamed): it is not streamed any more, and its copy on the target is kept", "table", t.Qualified())
		}
	}
	r.db.Tables = tables
	return nil
}

func (r *pipelineRunner) selectedTables(ctx context.Context) ([]selection.Table, error) {
	f, err := r.cmd.Selection.Filter()
	if err != nil {
		return nil, err
	}
	all, err := plan.ListTables(ctx, r.db.Source)
	if err != nil {
		return nil, err
	}
	return f.Tables(r.db.Name, all)
}

// unpublished lists the selected tables the publication does not cover,
// and the tables an earlier add left half-copied.
func (r *pipelineRunner) unpublished(ctx context.Context, src *pgx.Conn, dst *pgx.Conn) ([]selection.Table, error) {
	published, err := publishedTables(ctx, src, r.cmd.Publication, r.db.Name)
	if err != nil {
		return nil, err
	}
	var out []selection.Table
	for _, t := range r.db.Tables {
		if !published[t] {
			out = append(out, t)
		}
	}
	states, err := checkpoint.Store{Schema: r.cmd.CheckpointSchema}.LoadTables(ctx, dst, r.slot)
	if err != nil {
		return nil, err
	}
	for _, s := range states {
		t := selection.Table{Database: r.db.Name, Schema: s.Schema, Name: s.Name}
		if s.State != checkpoint.TableCopying || slices.Contains(out, t) {
			continue
		}
		var exists bool
		if err := src.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, pgx.Identifier{s.Schema, s.Name}.Sanitize()).Scan(&exists); err != nil {
			return nil, fmt.Errorf("look up %s on the source: %w", t.Qualified(), err)
		}
		if !exists { // dropped on the source before its add finished
			if err := (checkpoint.Store{Schema: r.cmd.CheckpointSchema}).ForgetTable(ctx, dst, r.slot, s.Schema, s.Name); err != nil {
				return nil, err
			}
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

// joinNewTables copies the selected tables that are not part of the
// migration yet (created on the source after init) and makes them join the
// stream. The caller holds the migration's writer lock (an open applier),
// so no other sync streams meanwhile. It reports whether any joined; the
// applier must then be opened again to load their copy positions.
func (r *pipelineRunner) joinNewTables(ctx context.Context, src *pgx.Conn) (bool, error) {
	dst, err := r.db.Target.Connect(ctx)
	if err != nil {
		return false, err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	if err := r.followTables(ctx, src, dst); err != nil {
		return false, err
	}
	tables, err := r.unpublished(ctx, src, dst)
	if err != nil || len(tables) == 0 {
		return false, err
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.String()
	}
	list := strings.Join(names, ", ")
	if r.cmd.SchemaChanges == string(apply.SchemaChangesStop) {
		return false, setupError("%s is selected but not replicated yet (created on the source after init?), and --schema-changes=stop: run sync with --schema-changes=apply to copy it and stream it, or leave it out with --exclude-tables %s", list, strings.Join(names, ","))
	}
	if err := snapshot.CheckAddable(ctx, r.db, tables); err != nil {
		if errors.Is(err, snapshot.ErrNotPublishable) {
			return false, setupError("%v", err)
		}
		return false, err
	}
	var major int
	fmt.Sscanf(src.PgConn().ParameterStatus("server_version"), "%d", &major)
	tools, err := pgtools.Find(ctx, major)
	if err != nil {
		return false, setupError("new tables %s need pg_dump to copy their definitions: %v: %s", list, err, pgtools.InstallHint(major))
	}
	caps, err := snapshot.TargetCapabilities(ctx, dst)
	if err != nil {
		return false, err
	}
	r.log.Info("tables selected on the source are not replicated yet: copying them, then they join the stream", "tables", list)
	res, err := snapshot.AddTables(ctx, r.db, tables, snapshot.AddOptions{
		Slot:             r.slot,
		Publication:      r.cmd.Publication,
		CheckpointSchema: r.cmd.CheckpointSchema,
		Jobs:             min(runtime.NumCPU(), 4),
		Tools:            tools,
		Target:           caps,
		Log:              r.log,
	})
	for _, n := range res.Notices {
		r.log.Warn("skipped", "what", n)
	}
	for _, t := range res.Gone {
		r.log.Info("table dropped on the source before its copy: nothing to add", "table", t.Qualified())
	}
	if errors.Is(err, snapshot.ErrNotPublishable) {
		return false, setupError("%v", err)
	}
	var missingType *usertype.UnsupportedError
	if errors.As(err, &missingType) {
		return false, setupError("copy %s: %v: run on the target %s, then restart sync", list, missingType, missingType.Fix())
	}
	if err != nil {
		var pgErr *pgconn.PgError
		for _, t := range tables {
			if r.recopied[t.Schema+"."+t.Name].count > 0 && errors.As(err, &pgErr) && pgErr.Code == "2BP01" {
				// Copied again for a schema change: a view on the table
				// blocks DROP TABLE, and would again.
				return false, setupError("copy %s again (for a schema change DDL could not follow): %v: fix that on the target (drop what depends on the table there, to make it again after), or copy everything again with init --drop-existing; then restart sync", list, err)
			}
		}
		return false, fmt.Errorf("add tables %s: %w", list, err)
	}
	for _, t := range res.Added {
		r.log.Info("table joined the migration", "table", t.Qualified(), "copied_at", res.CopyLSN.String())
	}
	r.mon.metrics.TablesAdded(r.db.Name, len(res.Added))
	return len(res.Added) > 0, nil
}

// publishedTables are the tables of db in the publication.
func publishedTables(ctx context.Context, conn *pgx.Conn, publication, db string) (map[selection.Table]bool, error) {
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname FROM pg_publication p
		JOIN pg_publication_rel pr ON pr.prpubid = p.oid
		JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE p.pubname = $1 AND NOT (n.nspname = $2 AND c.relname = $3)`, publication, ddlcapture.Schema, ddlcapture.Table)
	if err != nil {
		return nil, fmt.Errorf("read publication %s: %w", publication, err)
	}
	defer rows.Close()
	published := map[selection.Table]bool{}
	for rows.Next() {
		t := selection.Table{Database: db}
		if err := rows.Scan(&t.Schema, &t.Name); err != nil {
			return nil, err
		}
		published[t] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read publication %s: %w", publication, err)
	}
	return published, nil
}

// tablesAppeared reports whether the selection now covers a table this
// attempt does not stream (the catalog poll while streaming).
func (r *pipelineRunner) tablesAppeared(ctx context.Context) ([]selection.Table, error) {
	now, err := r.selectedTables(ctx)
	if err != nil {
		return nil, err
	}
	var out []selection.Table
	for _, t := range now {
		if !slices.Contains(r.db.Tables, t) {
			out = append(out, t)
		}
	}
	for _, t := range r.db.Tables {
		if !slices.Contains(now, t) && !r.gone[t] {
			if r.gone == nil {
				r.gone = map[selection.Table]bool{}
			}
			r.gone[t] = true
			r.log.Warn("table no longer on the source (dropped, or renamed): it is not streamed any more, and its copy on the target is kept", "table", t.Qualified())
		}
	}
	return out, nil
}

// followTables marks the tables dropped on the source, under the
// migration's writer lock, before the stream starts: a table whose source
// OID is gone was dropped there (said once; its copy on the target is kept
// and no longer changes). Renames are followed by the applier, at their
// place in the stream (apply/follow.go).
func (r *pipelineRunner) followTables(ctx context.Context, src, dst *pgx.Conn) error {
	store := checkpoint.Store{Schema: r.cmd.CheckpointSchema}
	states, err := store.LoadTables(ctx, dst, r.slot)
	if err != nil {
		return err
	}
	for _, st := range states {
		if st.RelID == 0 || (st.State != checkpoint.TableStreaming && st.State != checkpoint.TableCopied) {
			continue
		}
		var exists bool
		if err := src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = $1 AND relkind IN ('r', 'p'))`, st.RelID).Scan(&exists); err != nil {
			return fmt.Errorf("look up table %s.%s on the source: %w", st.Schema, st.Name, err)
		}
		if exists {
			continue
		}
		r.log.Warn("table dropped on the source: it is not streamed any more, and its copy on the target is kept", "table", st.Schema+"."+st.Name)
		st.State = checkpoint.TableDropped
		if err := store.SetTable(ctx, dst, r.slot, st); err != nil {
			return err
		}
	}
	return nil
}

// finishTables makes the foreign keys of tables that joined the migration
// once the checkpoint has passed their copy (snapshot.FinishTables). It
// reports whether any table was finished.
func (r *pipelineRunner) finishTables(ctx context.Context, checkpointLSN pglogrepl.LSN) (bool, error) {
	dst, err := r.db.Target.Connect(ctx)
	if err != nil {
		return false, err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	if checkpointLSN == 0 {
		pos, err := checkpoint.Store{Schema: r.cmd.CheckpointSchema}.Load(ctx, dst, r.slot)
		if err != nil {
			return false, err
		}
		checkpointLSN = pos.EndLSN
	}
	done, err := snapshot.FinishTables(ctx, dst, checkpoint.Store{Schema: r.cmd.CheckpointSchema}, r.slot, checkpointLSN)
	for _, t := range done {
		r.log.Info("joined table complete: its foreign keys are made, now that the stream has passed its copy", "table", t)
	}
	if err != nil {
		return len(done) > 0, fmt.Errorf("make the foreign keys of a joined table, now that the stream has passed its copy: %w", err)
	}
	return len(done) > 0, nil
}

// tablesToFinish reports whether a joined table's foreign keys are due:
// the checkpoint has passed its copy.
func (r *pipelineRunner) tablesToFinish(ctx context.Context) (bool, error) {
	dst, err := r.db.Target.Connect(ctx)
	if err != nil {
		return false, err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	store := checkpoint.Store{Schema: r.cmd.CheckpointSchema}
	pos, err := store.Load(ctx, dst, r.slot)
	if err != nil {
		return false, err
	}
	states, err := store.LoadTables(ctx, dst, r.slot)
	if err != nil {
		return false, err
	}
	for _, t := range states {
		if t.State == checkpoint.TableCopied && len(t.Pending) > 0 && t.CopyLSN <= pos.EndLSN {
			return true, nil
		}
	}
	return false, nil
}

// recopy has a table copied again at a new snapshot, through the path of a
// table added to the migration, when its target copy cannot follow a schema
// change of the source by DDL (apply.RecopyError): its state goes back to
// copying, so the next attempt copies it (joinNewTables) and the stream
// skips its changes older than the copy. A partition is copied with its
// partitioned table (the table of the migration); a table the source has
// renamed since is renamed on the target first, so the copy finds it. A
// table that asks again with the stream at the same position (the copy did
// not help) stops sync instead.
func (r *pipelineRunner) recopy(ctx context.Context, e *apply.RecopyError, at pglogrepl.LSN) error {
	src, err := r.db.Source.Connect(ctx)
	if err != nil {
		return err
	}
	defer src.Close(context.WithoutCancel(ctx))
	dst, err := r.db.Target.Connect(ctx)
	if err != nil {
		return err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	schema, table := e.Schema, e.Name
	var now []string
	err = src.QueryRow(ctx, `SELECT ARRAY[n.nspname::text, c.relname::text] FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = COALESCE(pg_partition_root($1::oid), $1::oid)`, e.RelID).Scan(&now)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // dropped on the source since: followTables says so
	}
	if err != nil {
		return fmt.Errorf("look up table OID %d on the source: %w", e.RelID, err)
	}
	var root []string
	if err := dst.QueryRow(ctx, `SELECT COALESCE((SELECT ARRAY[n.nspname::text, c.relname::text] FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = pg_partition_root(to_regclass($1))), ARRAY[$2, $3])`, pgx.Identifier{schema, table}.Sanitize(), schema, table).Scan(&root); err != nil {
		return fmt.Errorf("look up %s.%s on the target: %w", schema, table, err)
	}
	schema, table = root[0], root[1]
	store := checkpoint.Store{Schema: r.cmd.CheckpointSchema}
	// The message may name the table as the source renamed it, while the
	// target's copy keeps the old name (the rename, in the batch that met
	// the change, was rolled back with it): the copy is the one recorded
	// for the source OID.
	var rootOID uint32
	if err := src.QueryRow(ctx, `SELECT COALESCE(pg_partition_root($1::oid)::oid, $1::oid)`, e.RelID).Scan(&rootOID); err != nil {
		return fmt.Errorf("look up table OID %d on the source: %w", e.RelID, err)
	}
	if known, err := store.LoadTables(ctx, dst, r.slot); err != nil {
		return err
	} else {
		for _, s := range known {
			if s.RelID == rootOID && s.State != checkpoint.TableDropped {
				schema, table = s.Schema, s.Name
			}
		}
	}
	if now[0] != schema || now[1] != table {
		if err := r.renameCopy(ctx, dst, store, schema, table, now[0], now[1]); err != nil {
			return err
		}
		schema, table = now[0], now[1]
	}
	name := schema + "." + table
	if r.recopied == nil {
		r.recopied = map[string]recopies{}
	}
	n := r.recopied[name]
	if at > n.at || n.count == 0 {
		n = recopies{at: at}
	}
	n.count++
	if r.recopied[name] = n; n.count > 3 {
		return setupError("%v; copying table %s again did not help (%d times, the stream still at %s): compare its columns on both sides and make the target's match, then restart sync", e, name, n.count-1, at)
	}
	states, err := store.LoadTables(ctx, dst, r.slot)
	if err != nil {
		return err
	}
	t := checkpoint.Table{Schema: schema, Name: table, State: checkpoint.TableCopying}
	for _, s := range states {
		if s.Schema == schema && s.Name == table {
			t.Pending = s.Pending // keys still to make after an earlier copy
		}
	}
	if err := store.SetTable(ctx, dst, r.slot, t); err != nil {
		return err
	}
	r.log.Warn("the target's copy of a table cannot follow a schema change of the source by DDL: copying the table again", "table", name, "change", e.Why)
	return nil
}

// renameCopy renames the target's copy of a table, and its state, as the
// source renamed the table.
func (r *pipelineRunner) renameCopy(ctx context.Context, dst *pgx.Conn, store checkpoint.Store, schema, table, toSchema, toTable string) error {
	from := pgx.Identifier{schema, table}.Sanitize()
	return pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error {
		if toSchema != schema {
			if _, err := tx.Exec(ctx, "ALTER TABLE "+from+" SET SCHEMA "+pgx.Identifier{toSchema}.Sanitize()); err != nil {
				return fmt.Errorf("follow the source's rename of %s.%s to %s.%s: %w", schema, table, toSchema, toTable, err)
			}
			from = pgx.Identifier{toSchema, table}.Sanitize()
		}
		if toTable != table {
			if _, err := tx.Exec(ctx, "ALTER TABLE "+from+" RENAME TO "+pgx.Identifier{toTable}.Sanitize()); err != nil {
				return fmt.Errorf("follow the source's rename of %s.%s to %s.%s: %w", schema, table, toSchema, toTable, err)
			}
		}
		_, err := tx.Exec(ctx, store.RenameTableSQL(), r.slot, schema, table, toSchema, toTable)
		return err
	})
}

// recopies counts the copies of one table again at one stream position.
type recopies struct {
	at    pglogrepl.LSN
	count int
}
