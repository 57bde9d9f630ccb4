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
		switch {
		case t.State == checkpoint.TableCopying:
			a.joins[t.Schema+"."+t.Name] = copyUnfinished
		case t.CopyLSN > from:
			a.joins[t.Schema+"."+t.Name] = t.CopyLSN
		}
	}
	return nil
}

// copyUnfinished marks a table whose add has not finished.
const copyUnfinished = pglogrepl.LSN(1<<64 - 1)

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
		if err := a.checkCopied(r.name); err != nil {
			return nil, err
		}
		if a.inCopy(r.name) {
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
