package apply

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/stream"
)

// Tables added to a running migration (snapshot.AddTables) were copied at a
// snapshot whose consistent point is their copy LSN: the copy holds every
// source transaction that committed before it. The stream, which resumes
// from the migration's checkpoint, may carry such transactions again; their
// changes to those tables are skipped, and only theirs. Until a table's
// first change is applied, its Relation messages are kept without being
// compared with the target, since one sent before the copy may describe a
// shape the copy no longer has.

// loadJoins reads the copy LSNs of the tables added after init that the
// checkpoint has not passed yet, and the tables whose add has not finished:
// a change to one of those stops the applier (its copy is partial; the
// caller completes the add before it streams).
func (a *Applier) loadJoins(ctx context.Context, db *pgx.Conn, from pglogrepl.LSN) error {
	tables, err := a.cfg.Store.LoadTables(ctx, db, a.cfg.Slot)
	if err != nil {
		return err
	}
	a.loadTables(tables)
	if a.srcCols, err = a.cfg.Store.LoadColumns(ctx, db, a.cfg.Slot); err != nil {
		return err
	}
	a.joins = map[string]pglogrepl.LSN{}
	for _, t := range tables {
		at := t.CopyLSN
		switch {
		case t.State == checkpoint.TableCopying:
			at = copyUnfinished
		case t.CopyLSN <= from:
			continue
		}
		// The stream names a partitioned table's partitions, which its
		// copy holds with it.
		rows, err := db.Query(ctx, `SELECT format('%s.%s', n.nspname, c.relname) FROM pg_partition_tree(to_regclass($1)) p
			JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace`, pgx.Identifier{t.Schema, t.Name}.Sanitize())
		if err != nil {
			return fmt.Errorf("list the partitions of %s.%s on the target: %w", t.Schema, t.Name, err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("list the partitions of %s.%s on the target: %w", t.Schema, t.Name, err)
		}
		for _, name := range append(names, t.Schema+"."+t.Name) {
			a.joins[name] = at
		}
	}
	return nil
}

// copyUnfinished marks a table whose add has not finished.
const copyUnfinished = pglogrepl.LSN(1<<64 - 1)

// copyName is the name a table's copy state goes by: the target's name for
// the source OID when the states know it (the stream may still use a name
// the source has changed since the copy), else the message's.
func (a *Applier) copyName(id uint32, name string) string {
	if st, ok := a.byOID[id]; ok {
		return st.Schema + "." + st.Name
	}
	return name
}

// checkCopied fails for a table whose add has not finished.
func (a *Applier) checkCopied(name string) error {
	if a.joins[name] == copyUnfinished {
		return fmt.Errorf("apply %s: a change to table %s, whose copy is not complete (the next start copies it again)", a.cfg.Database, name)
	}
	return nil
}

// inCopy reports whether the current source transaction committed before
// the named table's copy, so the copy already holds its changes.
func (a *Applier) inCopy(name string) bool {
	at, ok := a.joins[name]
	return ok && a.txnFinal < at
}

// admit filters one change for the tables added after init: nil when every
// table it touches already holds it; otherwise the change (a TRUNCATE cut
// down to the tables that do not), with the tables' deferred Relation
// messages compared with the target first.
func (a *Applier) admit(ctx context.Context, msg stream.Message) (stream.Message, error) {
	if len(a.joins) == 0 {
		return msg, nil
	}
	var ids []uint32
	switch m := msg.(type) {
	case *stream.Insert:
		ids = []uint32{m.RelationID}
	case *stream.Update:
		ids = []uint32{m.RelationID}
	case *stream.Delete:
		ids = []uint32{m.RelationID}
	case *stream.Truncate:
		ids = m.RelationIDs
	}
	var keep []uint32
	for _, id := range ids {
		r, err := a.relation(id)
		if err != nil {
			return nil, err
		}
		if err := a.checkCopied(a.copyName(id, r.name)); err != nil {
			return nil, err
		}
		if a.inCopy(a.copyName(id, r.name)) {
			a.skipped++
			continue
		}
		if r.deferred {
			if err := a.reconcileNow(ctx, id, r); err != nil {
				return nil, err
			}
		}
		keep = append(keep, id)
	}
	switch {
	case len(keep) == 0:
		return nil, nil
	case len(keep) < len(ids):
		t := *msg.(*stream.Truncate)
		t.RelationIDs = keep
		return &t, nil
	}
	return msg, nil
}

// reconcileNow compares a deferred Relation message with the target, before
// the table's first applied change.
func (a *Applier) reconcileNow(ctx context.Context, id uint32, r *relation) error {
	if err := a.emitMerged(ctx); err != nil {
		return err
	}
	if err := a.flush(ctx); err != nil {
		return err
	}
	nr, err := a.relate(ctx, r.msg)
	if err != nil {
		return err
	}
	a.rels[id] = nr
	return nil
}
