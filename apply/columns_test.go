package apply

import (
	"fmt"
	"math/rand"
	"os"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
)

// col is a column of the model table: its attribute number and name.
type col struct {
	num  int16
	name string
}

// evolve applies n random column changes: renames (to a free name, or a
// swap of two names), adds and drops, with names from a small pool so that
// names are reused.
func evolve(r *rand.Rand, cols []col, next *int16, n int) []col {
	out := append([]col(nil), cols...)
	names := []string{"a", "b", "c", "d", "e", "f", "g"}
	used := func(name string) bool {
		for _, c := range out {
			if c.name == name {
				return true
			}
		}
		return false
	}
	for ; n > 0; n-- {
		switch op := r.Intn(4); {
		case op == 0 && len(out) > 0:
			i := r.Intn(len(out))
			if name := names[r.Intn(len(names))]; !used(name) {
				out[i].name = name
			}
		case op == 1 && len(out) > 1:
			i, j := r.Intn(len(out)), r.Intn(len(out))
			out[i].name, out[j].name = out[j].name, out[i].name
		case op == 2:
			if name := names[r.Intn(len(names))]; !used(name) {
				*next++
				out = append(out, col{num: *next, name: name})
			}
		case op == 3 && len(out) > 1:
			i := r.Intn(len(out))
			out = append(out[:i], out[i+1:]...)
		}
	}
	return out
}

// TestAlignColumnsModel compares what alignColumns and columnChanges decide
// with the true history of a table's columns: the target's copy has the
// columns as recorded, a Relation message describes a later state, and the
// source's catalog an even later one. Whenever they decide (report true),
// every column of the message ends under its name on the target with the
// data of the same source column, unless that column is gone from the
// source's catalog; they decide only when the catalog is still at the
// message, which its names alone do not prove.
func TestAlignColumnsModel(t *testing.T) {
	cases := 20000
	if os.Getenv("SEREN_LONG_TESTS") != "" {
		cases = 500000
	}
	r := rand.New(rand.NewSource(1))
	decided := 0
	for n := 0; n < cases; n++ {
		var next int16
		var start []col
		for _, name := range []string{"a", "b", "c"}[:1+r.Intn(3)] {
			next++
			start = append(start, col{num: next, name: name})
		}
		msg := evolve(r, start, &next, r.Intn(4))
		now := msg
		if r.Intn(2) == 0 {
			now = evolve(r, msg, &next, 1+r.Intn(3))
		}
		recorded := checkpoint.SourceColumns{}
		target := map[string]targetColumn{}
		identity := map[string]int16{} // target column name -> source column its data is
		for _, c := range start {
			recorded[c.num] = c.name
			target[c.name] = targetColumn{}
			identity[c.name] = c.num
		}
		shape := sourceShape{matches: len(now) == len(msg), found: len(now) > 0}
		for i, c := range now {
			shape.attrs = append(shape.attrs, sourceAttr{num: c.num, name: c.name})
			// As readSourceShape: by names, which cannot see numbers.
			shape.matches = shape.matches && msg[i].name == c.name
		}
		names := make([]string, len(msg))
		for i, c := range msg {
			names[i] = c.name
		}
		desc := fmt.Sprintf("case %d: recorded %v, message %v, catalog %v", n, start, msg, now)
		nums, ok := alignColumns(shape, recorded)
		var drops []string
		var renames []rename
		if ok {
			drops, renames, ok = columnChanges(target, recorded, names, nums)
		}
		if ok && !shape.matches {
			t.Fatalf("%s: decided although the catalog is past the message", desc)
		}
		if !ok {
			continue
		}
		decided++
		for _, d := range drops {
			delete(identity, d)
		}
		moved := map[string]int16{}
		for _, rn := range renames {
			moved[rn.to] = identity[rn.from]
			delete(identity, rn.from)
		}
		for name, id := range moved {
			identity[name] = id
		}
		alive := map[int16]bool{}
		for _, c := range now {
			alive[c.num] = true
		}
		for i, c := range msg {
			id, there := identity[c.name]
			if !there {
				id = nums[i] // added: holds the new column's values from here on
			}
			if alive[c.num] && id != c.num && (there || recorded[c.num] != "") {
				t.Fatalf("%s: column %s (attnum %d) is the data of attnum %d on the target (drops %v, renames %v, nums %v)",
					desc, c.name, c.num, id, drops, renames, nums)
			}
		}
	}
	if decided < cases/2 {
		t.Errorf("decided only %d of %d cases", decided, cases)
	}
}
