package apply

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/stream"
)

// The merger is checked against a model: applying every change in order to
// an in-memory table must give exactly the table that applying the merged
// statements (deletes, inserts, update groups) gives, for random sequences
// of inserts, updates (with unchanged TOAST and NULL values), deletes and
// key changes over a small key space, cut into random batches.

// propertyCases is how many random sequences a property test runs:
// thousands in make test, many more with SEREN_LONG_TESTS (make test-long).
func propertyCases() int {
	if os.Getenv("SEREN_LONG_TESTS") != "" {
		return 200_000
	}
	return 3000
}

// chooser draws the test's decisions: from a seeded generator, or from a
// fuzzer's bytes.
type chooser interface {
	// intn returns a number in [0, n).
	intn(n int) int
}

type randChooser struct{ r *rand.Rand }

func (c randChooser) intn(n int) int { return c.r.IntN(n) }

type byteChooser struct{ b []byte }

func (c *byteChooser) intn(n int) int {
	if len(c.b) == 0 {
		return n - 1 // ends every "while the draw is 0" loop
	}
	v := int(c.b[0])
	c.b = c.b[1:]
	return v % n
}

// foldTable is the model: rows by rendered key.
type foldTable map[string][][]byte

func testRelation(keyCols int) *relation {
	msg := &stream.Relation{ID: 1, Namespace: "public", Name: "t", ReplicaIdentity: 'd'}
	for i := range keyCols + 2 {
		msg.Columns = append(msg.Columns, stream.RelationColumn{Name: fmt.Sprintf("c%d", i), Key: i < keyCols})
	}
	r := newRelation(msg)
	r.mergeable = true
	return r
}

// foldRun is one random sequence checked against the model.
type foldRun struct {
	t      testing.TB
	c      chooser
	r      *relation
	model  foldTable // every change applied in order
	target foldTable // merged statements applied per batch
	m      merger
	log    []string
	serial int
}

func (f *foldRun) fail(format string, args ...any) {
	f.t.Helper()
	f.t.Fatalf("%s\nchanges:\n%s", fmt.Sprintf(format, args...), strings.Join(f.log, "\n"))
}

func (f *foldRun) keyOf(n int) [][]byte {
	key := make([][]byte, len(f.r.key))
	for i := range key {
		key[i] = []byte(fmt.Sprintf("k%d", (n>>(2*i))&3))
	}
	return key
}

func (f *foldRun) value() []byte {
	switch f.c.intn(4) {
	case 0:
		return nil
	case 1:
		return []byte("")
	}
	f.serial++
	return []byte(fmt.Sprintf("v%d", f.serial))
}

func (f *foldRun) newRow(key [][]byte) [][]byte {
	row := make([][]byte, len(f.r.cols))
	copy(row, key)
	for i := len(key); i < len(row); i++ {
		row[i] = f.value()
	}
	return row
}

// flush applies what the merger holds to the target, as the emitted
// statements would, with their row-count checks, and empties it.
func (f *foldRun) flush() {
	for _, id := range f.m.order {
		p := f.m.tables[id].plan()
		for _, key := range p.deletes {
			k := mergeKey(key)
			if _, ok := f.target[k]; !ok {
				f.fail("merged DELETE of %s matched no row", k)
			}
			delete(f.target, k)
		}
		for _, row := range p.inserts {
			k := mergeKey(pick(row, f.r.key))
			if _, ok := f.target[k]; ok {
				f.fail("merged INSERT of %s hit an existing row (duplicate key)", k)
			}
			f.target[k] = slices.Clone(row)
		}
		for _, group := range p.updates {
			shape := setKey(setColumns(group[0].set))
			for _, nc := range group {
				if got := setKey(setColumns(nc.set)); got != shape {
					f.fail("update group mixes column sets %s and %s", shape, got)
				}
				k := mergeKey(nc.key)
				row, ok := f.target[k]
				if !ok {
					f.fail("merged UPDATE of %s matched no row", k)
				}
				for _, c := range f.r.nonKey(setColumns(nc.set)) {
					row[c] = nc.row[c]
				}
			}
		}
	}
	f.m.reset()
}

func (f *foldRun) step() {
	key := f.keyOf(f.c.intn(1 << (2 * len(f.r.key))))
	k := mergeKey(key)
	row, exists := f.model[k]
	switch {
	case !exists:
		ins := f.newRow(key)
		f.log = append(f.log, fmt.Sprintf("insert %q", ins))
		f.model[k] = slices.Clone(ins)
		if err := f.m.insert(1, f.r, ins, 0); err != nil {
			f.fail("insert: %v", err)
		}
	case f.c.intn(10) == 0:
		// A key change takes the ordered path: what was merged goes first.
		to := f.keyOf(f.c.intn(1 << (2 * len(f.r.key))))
		tk := mergeKey(to)
		if _, taken := f.model[tk]; taken {
			return
		}
		f.log = append(f.log, fmt.Sprintf("update key %s -> %s", k, tk))
		f.flush()
		moved := slices.Clone(row)
		copy(moved, to)
		delete(f.model, k)
		f.model[tk] = moved
		t := slices.Clone(f.target[k])
		copy(t, to)
		delete(f.target, k)
		f.target[tk] = t
	case f.c.intn(3) == 0:
		f.log = append(f.log, fmt.Sprintf("delete %s", k))
		delete(f.model, k)
		if err := f.m.delete(1, f.r, key); err != nil {
			f.fail("delete: %v", err)
		}
	default:
		vals := make(stream.Tuple, len(f.r.cols))
		for i := range vals {
			switch {
			case i < len(key):
				vals[i] = stream.Value{Kind: stream.ValueText, Data: key[i]}
			case f.c.intn(4) == 0:
				vals[i] = stream.Value{Kind: stream.ValueUnchangedToast}
			default:
				if v := f.value(); v == nil {
					vals[i] = stream.Value{Kind: stream.ValueNull}
				} else {
					vals[i] = stream.Value{Kind: stream.ValueText, Data: v}
				}
			}
		}
		f.log = append(f.log, fmt.Sprintf("update %s %v", k, vals))
		for i, v := range vals {
			if v.Kind != stream.ValueUnchangedToast {
				row[i] = v.Data
			}
		}
		if err := f.m.update(1, f.r, key, vals); err != nil {
			f.fail("update: %v", err)
		}
	}
}

// checkFold runs one random sequence of up to 60 changes against a random
// initial table, cutting batches at random, and compares the two tables.
func checkFold(t testing.TB, c chooser) {
	f := &foldRun{t: t, c: c, r: testRelation(1 + c.intn(2)), model: foldTable{}}
	for n := c.intn(6); n > 0; n-- {
		key := f.keyOf(c.intn(1 << (2 * len(f.r.key))))
		f.model[mergeKey(key)] = f.newRow(key)
	}
	f.target = foldTable{}
	for k, row := range f.model {
		f.target[k] = slices.Clone(row)
	}
	for n := 1 + c.intn(60); n > 0; n-- {
		f.step()
		if c.intn(8) == 0 {
			f.log = append(f.log, "-- batch ends")
			f.flush()
		}
	}
	f.flush()
	if !maps.EqualFunc(f.model, f.target, func(a, b [][]byte) bool {
		return slices.EqualFunc(a, b, func(x, y []byte) bool { return (x == nil) == (y == nil) && string(x) == string(y) })
	}) {
		f.fail("target differs from the model:\nmodel:  %q\ntarget: %q", f.model, f.target)
	}
}

func TestMergerMatchesModel(t *testing.T) {
	for seed := range uint64(propertyCases()) {
		checkFold(t, randChooser{rand.New(rand.NewPCG(seed, 1))})
	}
}

func FuzzMerger(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte("insert delete insert"))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFold(t, &byteChooser{b: b})
	})
}

// Insert, delete, insert of one key in one batch is one insert.
func TestMergerInsertDeleteInsert(t *testing.T) {
	r := testRelation(1)
	var m merger
	row := func(v string) [][]byte { return [][]byte{[]byte("1"), []byte(v), nil} }
	for _, err := range []error{
		m.insert(1, r, row("a"), 0),
		m.delete(1, r, [][]byte{[]byte("1")}),
		m.insert(1, r, row("b"), 0),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	p := m.tables[1].plan()
	if len(p.deletes) != 0 || len(p.inserts) != 1 || string(p.inserts[0][1]) != "b" {
		t.Fatalf("plan = %d deletes, inserts %q; want one insert of the second row", len(p.deletes), p.inserts)
	}
}
