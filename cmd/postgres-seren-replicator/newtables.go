package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/apply"
	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/pgtools"
	"github.com/serenorg/postgres-seren-replicator/internal/plan"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
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
		if s.State == checkpoint.TableCopying && !slices.Contains(out, t) {
			out = append(out, t)
		}
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
	if err != nil {
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
		WHERE p.pubname = $1`, publication)
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

// followTables brings the table states up to date, under the migration's
// writer lock, before the stream starts: each published table without a
// state (copied by init) gets one, with its OID on the source, which
// follows it through renames. A table whose OID is gone from the source was
// dropped there: said once, its copy on the target kept. A table whose OID
// now has another name was renamed there: it is renamed on the target too,
// so the stream's changes under the new name find it.
func (r *pipelineRunner) followTables(ctx context.Context, src, dst *pgx.Conn) error {
	store := checkpoint.Store{Schema: r.cmd.CheckpointSchema}
	if err := store.EnsureTables(ctx, dst); err != nil {
		return err
	}
	states, err := store.LoadTables(ctx, dst, r.slot)
	if err != nil {
		return err
	}
	known := map[[2]string]bool{}
	for _, st := range states {
		known[[2]string{st.Schema, st.Name}] = true
		if st.RelID == 0 || (st.State != checkpoint.TableStreaming && st.State != checkpoint.TableCopied) {
			continue
		}
		var schema, name string
		err := src.QueryRow(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.oid = $1 AND c.relkind IN ('r', 'p')`, st.RelID).Scan(&schema, &name)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			r.log.Warn("table dropped on the source: it is not streamed any more, and its copy on the target is kept", "table", st.Schema+"."+st.Name)
			st.State = checkpoint.TableDropped
			if err := store.SetTable(ctx, dst, r.slot, st); err != nil {
				return err
			}
		case err != nil:
			return fmt.Errorf("look up table %s.%s on the source: %w", st.Schema, st.Name, err)
		case schema != st.Schema || name != st.Name:
			if err := r.renameOnTarget(ctx, dst, store, st, schema, name); err != nil {
				return err
			}
			known[[2]string{schema, name}] = true
		}
	}
	rows, err := src.Query(ctx, `SELECT pr.prrelid, n.nspname, c.relname FROM pg_publication p
		JOIN pg_publication_rel pr ON pr.prpubid = p.oid
		JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE p.pubname = $1`, r.cmd.Publication)
	if err != nil {
		return fmt.Errorf("read publication %s: %w", r.cmd.Publication, err)
	}
	var fresh []checkpoint.Table
	for rows.Next() {
		t := checkpoint.Table{State: checkpoint.TableStreaming}
		if err := rows.Scan(&t.RelID, &t.Schema, &t.Name); err != nil {
			return err
		}
		if !known[[2]string{t.Schema, t.Name}] {
			fresh = append(fresh, t)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read publication %s: %w", r.cmd.Publication, err)
	}
	for _, t := range fresh {
		if err := store.SetTable(ctx, dst, r.slot, t); err != nil {
			return err
		}
	}
	return nil
}

// renameOnTarget follows a rename on the source: the target table moves
// to the new schema and name, with its state and holds, in one transaction.
func (r *pipelineRunner) renameOnTarget(ctx context.Context, dst *pgx.Conn, store checkpoint.Store, st checkpoint.Table, schema, name string) error {
	from := pgx.Identifier{st.Schema, st.Name}.Sanitize()
	to := pgx.Identifier{schema, name}.Sanitize()
	var oldExists, newExists bool
	if err := dst.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL`, from, to).Scan(&oldExists, &newExists); err != nil {
		return fmt.Errorf("look up %s and %s on the target: %w", from, to, err)
	}
	if r.cmd.SchemaChanges == string(apply.SchemaChangesStop) {
		return setupError("table %s was renamed on the source to %s, and --schema-changes=stop: rename it on the target (ALTER TABLE %s RENAME TO …), or run sync with --schema-changes=apply", from, to, from)
	}
	if !oldExists || newExists {
		return setupError("table %s was renamed on the source to %s, but the target has %s: rename or drop there what is in the way (ALTER TABLE %s RENAME TO …), then restart sync",
			from, to, map[bool]string{true: "both names", false: "neither"}[newExists], to)
	}
	err := pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error {
		at := from
		if schema != st.Schema {
			if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()+"; ALTER TABLE "+from+" SET SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
				return err
			}
			at = pgx.Identifier{schema, st.Name}.Sanitize()
		}
		if name != st.Name {
			if _, err := tx.Exec(ctx, "ALTER TABLE "+at+" RENAME TO "+pgx.Identifier{name}.Sanitize()); err != nil {
				return err
			}
		}
		if err := apply.RenameHolds(ctx, tx, store, st.Schema, st.Name, schema, name); err != nil {
			return err
		}
		return store.RenameTable(ctx, tx, r.slot, st, checkpoint.Table{Schema: schema, Name: name})
	})
	if err != nil {
		return fmt.Errorf("rename %s to %s on the target, as on the source: %w", from, to, err)
	}
	r.log.Info("table renamed on the source: renamed on the target too", "from", st.Schema+"."+st.Name, "to", schema+"."+name)
	r.lookedForRenames = false
	return nil
}
