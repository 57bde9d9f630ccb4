package apply

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/serenorg/postgres-seren-replicator/stream"
)

// The merger folds a batch's row changes per key into their net effect. It
// is pure: it decides nothing about SQL or connections, so its folding is
// tested against a model that applies every change in order (fold_test.go).

// Net effects of a key's changes in the batch.
const (
	netInsert  = 'I' // the row did not exist before the batch and exists now
	netUpdate  = 'U' // the row existed and still exists
	netDelete  = 'D' // the row existed and is gone
	netReplace = 'R' // the row existed, was deleted, and a new one was inserted
	netNone    = 'N' // the row did not exist before the batch and is gone again
)

// netChange is what the batch does to one key.
type netChange struct {
	kind byte
	// row holds every column for inserts and replaces; for updates only the
	// columns in set are meaningful. Unchanged TOAST values are never stored:
	// the column is simply not set, so the target keeps its value.
	row [][]byte
	set []bool
	key [][]byte
}

// tableMerge accumulates one table's net changes, keys in first-seen order.
// A key is listed once however often its net effect changes.
//
// Inserts into a table that has had no other change in the batch go to
// fresh, in order, without a map entry: a run of inserts has nothing to
// fold (the source's key is unique, so none of those keys comes twice
// without a delete between). The first update or delete of the table moves
// them into changes (index), and from then on every change of the table
// folds by key. So a table holds rows in fresh or in changes, never both.
type tableMerge struct {
	r       *relation
	active  bool // has changes in this batch (listed in merger.order)
	fresh   [][][]byte
	keys    []string
	changes map[string]*netChange
	inserts [][][]byte // keyless tables: inserts only, in order
}

// merger holds the batch's accumulated changes of every eligible table.
type merger struct {
	tables map[uint32]*tableMerge
	order  []uint32
	bytes  int // payload bytes folded, to bound memory
	count  int // changes folded
}

func (m *merger) table(r *relation, id uint32) *tableMerge {
	if m.tables == nil {
		m.tables = map[uint32]*tableMerge{}
	}
	t, ok := m.tables[id]
	if !ok {
		t = &tableMerge{changes: map[string]*netChange{}}
		m.tables[id] = t
	}
	if !t.active {
		t.active = true
		m.order = append(m.order, id)
	}
	t.r = r
	return t
}

// reset empties the merger for the next batch, keeping the tables' maps
// (a batch's keys, at most MaxBatchChanges, would grow them anew each time).
func (m *merger) reset() {
	for _, t := range m.tables {
		clear(t.changes)
		clear(t.keys)
		t.keys = t.keys[:0]
		clear(t.fresh)
		t.fresh = t.fresh[:0]
		t.inserts = nil
		t.active = false
	}
	m.order = m.order[:0]
	m.bytes, m.count = 0, 0
}

func (m *merger) empty() bool { return m.count == 0 }

// insert folds the insert of a whole row (every column a value or NULL).
func (m *merger) insert(id uint32, r *relation, row [][]byte, size int) error {
	t := m.table(r, id)
	switch {
	case len(r.key) == 0:
		t.inserts = append(t.inserts, row)
	case len(t.keys) == 0:
		t.fresh = append(t.fresh, row)
	default:
		if err := t.insertKeyed(row); err != nil {
			return err
		}
	}
	m.count++
	m.bytes += size
	return nil
}

// insertKeyed folds an insert into changes by its key.
func (t *tableMerge) insertKeyed(row [][]byte) error {
	key := pick(row, t.r.key)
	k := mergeKey(key)
	nc, ok := t.changes[k]
	switch {
	case !ok:
		t.keys = append(t.keys, k)
		t.changes[k] = &netChange{kind: netInsert, row: row, key: key}
	case nc.kind == netDelete:
		nc.kind, nc.row, nc.set = netReplace, row, nil
	case nc.kind == netNone:
		nc.kind, nc.row, nc.set = netInsert, row, nil
	default:
		return permanent(fmt.Errorf("insert on table %s: key %s inserted twice in one batch", t.r.name, describeVals(t.r, key)))
	}
	return nil
}

// index moves the rows of fresh into changes, in order, before a change
// that may fold with one of them.
func (t *tableMerge) index() error {
	for _, row := range t.fresh {
		if err := t.insertKeyed(row); err != nil {
			return err
		}
	}
	clear(t.fresh)
	t.fresh = t.fresh[:0]
	return nil
}

// update folds an update that kept its key; vals is the new tuple, where
// unchanged TOAST values leave the column as it is.
func (m *merger) update(id uint32, r *relation, key [][]byte, vals stream.Tuple) error {
	t := m.table(r, id)
	if err := t.index(); err != nil {
		return err
	}
	k := mergeKey(key)
	nc, ok := t.changes[k]
	switch {
	case !ok:
		nc = &netChange{kind: netUpdate, row: make([][]byte, len(r.cols)), set: make([]bool, len(r.cols)), key: key}
		t.keys = append(t.keys, k)
		t.changes[k] = nc
	case nc.kind == netDelete || nc.kind == netNone:
		return permanent(fmt.Errorf("update on table %s: key %s was deleted earlier in the batch", r.name, describeVals(r, key)))
	}
	for i, v := range vals {
		switch v.Kind {
		case stream.ValueUnchangedToast:
			continue // keep what the row has (or what the batch inserted)
		case stream.ValueNull:
			nc.row[i] = nil
		case stream.ValueText:
			nc.row[i] = v.Data
		default:
			return fmt.Errorf("update on table %s: column %d has value kind %q", r.name, i, v.Kind)
		}
		if nc.set != nil {
			nc.set[i] = true
		}
	}
	m.count++
	m.bytes += vals.Size()
	return nil
}

// delete folds the delete of the row with key.
func (m *merger) delete(id uint32, r *relation, key [][]byte) error {
	t := m.table(r, id)
	if err := t.index(); err != nil {
		return err
	}
	k := mergeKey(key)
	nc, ok := t.changes[k]
	switch {
	case !ok:
		t.keys = append(t.keys, k)
		t.changes[k] = &netChange{kind: netDelete, key: key}
	case nc.kind == netInsert:
		nc.kind, nc.row, nc.set = netNone, nil, nil // born and gone within the batch
	case nc.kind == netDelete || nc.kind == netNone:
		return permanent(fmt.Errorf("delete on table %s: key %s deleted twice in one batch", r.name, describeVals(r, key)))
	default:
		nc.kind, nc.row, nc.set = netDelete, nil, nil
	}
	m.count++
	return nil
}

// tablePlan is what one table's merged changes become: DELETE every key in
// deletes, then INSERT every row of inserts, then each group of updates
// (updates setting the same columns, in first-seen order).
type tablePlan struct {
	deletes [][][]byte
	inserts [][][]byte
	updates [][]*netChange
}

// plan orders a table's net changes into statements. Deleting before
// inserting makes a replaced key's new row land after its old one is gone;
// no key appears in more than one list but a replaced one (delete, then
// insert).
func (t *tableMerge) plan() tablePlan {
	var p tablePlan
	// Rows in fresh have no other change in the batch (see tableMerge); the
	// capacity is cut so that appending to the plan never writes into fresh.
	p.inserts = t.fresh[:len(t.fresh):len(t.fresh)]
	var groups map[string]int
	for _, k := range t.keys {
		nc := t.changes[k]
		switch nc.kind {
		case netDelete:
			p.deletes = append(p.deletes, nc.key)
		case netReplace:
			p.deletes = append(p.deletes, nc.key)
			p.inserts = append(p.inserts, nc.row)
		case netInsert:
			p.inserts = append(p.inserts, nc.row)
		case netUpdate:
			shape := setKey(setColumns(nc.set))
			i, seen := groups[shape]
			if !seen {
				if groups == nil {
					groups = map[string]int{}
				}
				i = len(p.updates)
				groups[shape] = i
				p.updates = append(p.updates, nil)
			}
			p.updates[i] = append(p.updates[i], nc)
		}
	}
	p.inserts = append(p.inserts, t.inserts...)
	return p
}

// mergeKey renders key values as one map key, length-prefixed so that no
// two different keys collide.
func mergeKey(vals [][]byte) string {
	if len(vals) == 1 && vals[0] != nil {
		return string(vals[0]) // a table's keys all have the same width
	}
	var b strings.Builder
	for _, v := range vals {
		if v == nil {
			b.WriteString("-1:")
			continue
		}
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.Write(v)
	}
	return b.String()
}

func pick(row [][]byte, cols []int) [][]byte {
	out := make([][]byte, len(cols))
	for i, c := range cols {
		out[i] = row[c]
	}
	return out
}
