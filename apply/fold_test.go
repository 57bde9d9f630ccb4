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
	// bits is how many bits of each key column the keys use: 2 draws
	// mostly changes of existing keys, 4 mostly inserts of new ones, so that
	// runs of inserts (kept without an index, see tableMerge) come before an
	// update, delete or re-insert of one of their keys.
	bits int
}

func (f *foldRun) fail(format string, args ...any) {
	f.t.Helper()
	f.t.Fatalf("%s\nchanges:\n%s", fmt.Sprintf(format, args...), strings.Join(f.log, "\n"))
}

func (f *foldRun) keyOf(n int) [][]byte {
	key := make([][]byte, len(f.r.key))
	for i := range key {
		key[i] = []byte(fmt.Sprintf("k%d", (n>>(f.bits*i))&(1<<f.bits-1)))
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
	key := f.keyOf(f.c.intn(1 << (f.bits * len(f.r.key))))
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
		to := f.keyOf(f.c.intn(1 << (f.bits * len(f.r.key))))
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
	f := &foldRun{t: t, c: c, r: testRelation(1 + c.intn(2)), model: foldTable{}, bits: 2 + 2*c.intn(2)}
	for n := c.intn(6); n > 0; n-- {
		key := f.keyOf(c.intn(1 << (f.bits * len(f.r.key))))
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

// A run of inserts into a table with no other change in the batch is kept
// without a map entry per row; an update, delete or re-insert of one of
// those keys later in the batch still folds with it.
func TestMergerLazyInserts(t *testing.T) {
	r := testRelation(1)
	k := func(n int) [][]byte { return [][]byte{[]byte(fmt.Sprint(n))} }
	row := func(n int, v string) [][]byte { return [][]byte{[]byte(fmt.Sprint(n)), []byte(v), []byte("toast")} }
	var m merger
	for n := 1; n <= 5; n++ {
		if err := m.insert(1, r, row(n, "a"), 0); err != nil {
			t.Fatal(err)
		}
	}
	tm := m.tables[1]
	if len(tm.changes) != 0 || len(tm.fresh) != 5 {
		t.Fatalf("after 5 inserts: %d map entries, %d fresh rows; want 0 and 5", len(tm.changes), len(tm.fresh))
	}
	unchanged := stream.Value{Kind: stream.ValueUnchangedToast}
	text := func(s string) stream.Value { return stream.Value{Kind: stream.ValueText, Data: []byte(s)} }
	for _, err := range []error{
		m.update(1, r, k(3), stream.Tuple{text("3"), text("b"), unchanged}),
		m.delete(1, r, k(4)),
		m.insert(1, r, row(4, "c"), 0),
		m.delete(1, r, k(2)),
		m.insert(1, r, row(6, "d"), 0),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	p := tm.plan()
	var got []string
	for _, row := range p.inserts {
		got = append(got, fmt.Sprintf("%s=%s/%s", row[0], row[1], row[2]))
	}
	want := []string{"1=a/toast", "3=b/toast", "4=c/toast", "5=a/toast", "6=d/toast"}
	if !slices.Equal(got, want) || len(p.deletes) != 0 || len(p.updates) != 0 {
		t.Fatalf("plan: inserts %q, %d deletes, %d update groups; want inserts %q only", got, len(p.deletes), len(p.updates), want)
	}
	m.reset()
	if err := m.insert(1, r, row(1, "e"), 0); err != nil {
		t.Fatal(err)
	}
	if len(tm.changes) != 0 || len(tm.fresh) != 1 {
		t.Fatalf("next batch: %d map entries, %d fresh rows; want 0 and 1", len(tm.changes), len(tm.fresh))
	}
	// A key inserted twice without a delete between is found when the
	// rows are indexed.
	if err := m.insert(1, r, row(1, "f"), 0); err != nil {
		t.Fatal(err)
	}
	if err := m.delete(1, r, k(1)); err == nil || !strings.Contains(err.Error(), "inserted twice") {
		t.Fatalf("delete after a twice-inserted key: %v, want an error naming it", err)
	}
}

// Keyless tables merge inserts only; their updates and deletes take the
// ordered path after what was merged is written. Random inserts into a
// keyless and a keyed table, with ordered deletes of the keyless table's
// rows and batch cuts, must leave the target as applying every change in
// order does.
func TestMergerKeylessMatchesModel(t *testing.T) {
	for seed := range uint64(propertyCases()) {
		c := randChooser{rand.New(rand.NewPCG(seed, 2))}
		keyless, keyed := testRelation(0), testRelation(1)
		var m merger
		var model, target []string // keyless rows, rendered, in any order
		modelKeyed, targetKeyed := map[string]bool{}, map[string]bool{}
		var log []string
		flush := func() {
			for _, id := range m.order {
				for _, row := range m.tables[id].plan().inserts {
					if id == 2 {
						target = append(target, fmt.Sprintf("%q", row))
					} else {
						targetKeyed[string(row[0])] = true
					}
				}
			}
			m.reset()
		}
		for n, serial := 1+c.intn(60), 0; n > 0; n-- {
			switch op := c.intn(4); {
			case op == 0 && len(model) > 0:
				// An ordered delete of one row equal to a random one.
				victim := model[c.intn(len(model))]
				log = append(log, "ordered delete "+victim)
				flush()
				model = deleteOne(model, victim)
				i := slices.Index(target, victim)
				if i < 0 {
					t.Fatalf("seed %d: ordered delete of %s found no row on the target\n%s", seed, victim, strings.Join(log, "\n"))
				}
				target = deleteOne(target, victim)
			case op == 1:
				serial++
				row := [][]byte{[]byte(fmt.Sprint(serial)), nil}
				modelKeyed[string(row[0])] = true
				if err := m.insert(1, keyed, append(row, []byte("x")), 0); err != nil {
					t.Fatal(err)
				}
			default:
				row := [][]byte{[]byte(fmt.Sprint(c.intn(3))), nil}
				if c.intn(2) == 0 {
					row[1] = []byte("v")
				}
				log = append(log, fmt.Sprintf("insert %q", row))
				model = append(model, fmt.Sprintf("%q", row))
				if err := m.insert(2, keyless, row, 0); err != nil {
					t.Fatal(err)
				}
			}
			if c.intn(8) == 0 {
				log = append(log, "-- batch ends")
				flush()
			}
		}
		flush()
		slices.Sort(model)
		slices.Sort(target)
		if !slices.Equal(model, target) || !maps.Equal(modelKeyed, targetKeyed) {
			t.Fatalf("seed %d: target differs from the model:\nmodel:  %q %v\ntarget: %q %v\n%s", seed, model, modelKeyed, target, targetKeyed, strings.Join(log, "\n"))
		}
	}
}

func deleteOne(rows []string, row string) []string {
	i := slices.Index(rows, row)
	return slices.Delete(rows, i, i+1)
}
