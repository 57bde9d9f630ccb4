package apply

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// A Relation message names a table by its source OID as well as by name.
// The table states on the target (checkpoint.Table) pair each target table
// with the source OID it was copied from, so the applier can tell a table
// renamed on the source (same OID, new name: it is renamed on the target at
// that point of the stream, in commit order) from a different table that
// took a known name (dropped and created again, or names swapped), whose
// changes must not go into the old table's copy.

// loadTables indexes the table states by source OID and by name.
func (a *Applier) loadTables(states []checkpoint.Table) {
	a.byOID = map[uint32]checkpoint.Table{}
	a.byName = map[string]uint32{}
	for _, t := range states {
		if t.RelID == 0 || t.State == checkpoint.TableDropped {
			continue
		}
		a.byOID[t.RelID] = t
		a.byName[t.Schema+"."+t.Name] = t.RelID
	}
}

// relate compares a Relation message with the target: it follows a rename,
// refuses a table that is not the one the target's copy came from, and
// records the OID of a table seen for the first time.
func (a *Applier) relate(ctx context.Context, m *stream.Relation) (*relation, error) {
	name := m.Namespace + "." + m.Name
	if id, ok := a.byName[name]; ok && id != m.ID {
		return nil, permanent(fmt.Errorf("table %s on the source (OID %d) is not the table the target's %s was copied from (OID %d): it was dropped and created again, or tables swapped names; rename or drop the target's copy so that the names match the source again, then restart sync",
			name, m.ID, name, id))
	}
	st, known := a.byOID[m.ID]
	if known && (st.Schema != m.Namespace || st.Name != m.Name) {
		if err := a.followRename(ctx, st, m); err != nil {
			return nil, err
		}
	}
	r, err := a.reconcile(ctx, m)
	if err != nil {
		return nil, err
	}
	if !known {
		t := checkpoint.Table{Schema: m.Namespace, Name: m.Name, RelID: m.ID, State: checkpoint.TableStreaming}
		if err := a.inBatch(ctx, func() error {
			_, err := a.query(ctx, a.cfg.Store.RecordTableSQL(), a.cfg.Slot, t.Schema, t.Name, string(t.State), fmt.Sprint(t.RelID))
			return err
		}); err != nil {
			return nil, fmt.Errorf("record table %s: %w", name, err)
		}
		a.byOID[m.ID] = t
		a.byName[name] = m.ID
	}
	return r, nil
}

// followRename renames the target table as the source did, with its state
// and holds, in the batch's transaction.
func (a *Applier) followRename(ctx context.Context, st checkpoint.Table, m *stream.Relation) error {
	from := pgx.Identifier{st.Schema, st.Name}.Sanitize()
	var ddl []string
	at := from
	if m.Namespace != st.Schema {
		ddl = append(ddl, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{m.Namespace}.Sanitize(),
			"ALTER TABLE "+from+" SET SCHEMA "+pgx.Identifier{m.Namespace}.Sanitize())
		at = pgx.Identifier{m.Namespace, st.Name}.Sanitize()
	}
	if m.Name != st.Name {
		ddl = append(ddl, "ALTER TABLE "+at+" RENAME TO "+pgx.Identifier{m.Name}.Sanitize())
	}
	to := pgx.Identifier{m.Namespace, m.Name}.Sanitize()
	rows, err := a.query(ctx, `SELECT to_regclass($1) IS NULL AND to_regclass($2) IS NOT NULL`, from, to)
	if err != nil {
		return fmt.Errorf("look up %s and %s on the target: %w", from, to, err)
	}
	if len(rows) == 1 && string(rows[0][0]) == "t" {
		ddl = nil // renamed on the target already (by hand): only the records follow
	}
	if a.cfg.SchemaChanges == SchemaChangesStop && len(ddl) > 0 {
		return permanent(fmt.Errorf("table %s.%s was renamed on the source to %s.%s, and schema changes stop replication: run on the target %s; then restart sync",
			st.Schema, st.Name, m.Namespace, m.Name, strings.Join(ddl, "; ")))
	}
	err = a.inBatch(ctx, func() error {
		if err := a.runDDL(ctx, ddl); err != nil {
			return err
		}
		if _, err := a.query(ctx, `UPDATE `+heldTable(a.cfg.Store)+` SET schema_name = $3, table_name = $4 WHERE schema_name = $1 AND table_name = $2`,
			st.Schema, st.Name, m.Namespace, m.Name); err != nil {
			return err
		}
		_, err := a.query(ctx, a.cfg.Store.RenameTableSQL(), a.cfg.Slot, st.Schema, st.Name, m.Namespace, m.Name)
		return err
	})
	if err != nil {
		return fmt.Errorf("follow the rename of %s.%s to %s.%s: %w", st.Schema, st.Name, m.Namespace, m.Name, err)
	}
	delete(a.byName, st.Schema+"."+st.Name)
	st.Schema, st.Name = m.Namespace, m.Name
	a.byOID[m.ID] = st
	a.byName[m.Namespace+"."+m.Name] = m.ID
	a.log.Info("table renamed on the source: renamed on the target too", "from", from, "to", to)
	return nil
}

// inBatch runs f inside the open batch, whose commit it joins, or, for a
// transaction already applied (skipped), in a transaction of its own.
func (a *Applier) inBatch(ctx context.Context, f func() error) (err error) {
	if a.b.open || a.ownTxn {
		return f()
	}
	if _, err := a.query(ctx, "BEGIN"); err != nil {
		return err
	}
	a.ownTxn = true
	defer func() {
		a.ownTxn = false
		end := "COMMIT"
		if err != nil {
			end = "ROLLBACK"
		}
		if _, cerr := a.query(ctx, end); err == nil {
			err = cerr
		}
	}()
	return f()
}
