package snapshot

import (
	"context"
	"sync"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
	"github.com/serenorg/postgres-seren-replicator/internal/selection"
)

// A table is recorded as copied once, when the last of its pieces (of
// every partition) is done, whatever order the workers finish them in.
func TestTableTallyRecordsEachTableOnceAtItsLastPiece(t *testing.T) {
	a := selection.Table{Schema: "public", Name: "a"}
	p := selection.Table{Schema: "public", Name: "p"}
	ta := &copyTable{Schema: "public", Name: "a", sel: a}
	p1 := &copyTable{Schema: "public", Name: "p_1", sel: p}
	p2 := &copyTable{Schema: "public", Name: "p_2", sel: p}
	pieces := []piece{
		{table: ta, from: 0, to: 10, split: true}, {table: ta, from: 10, to: -1, split: true},
		{table: p1, to: -1}, {table: p2, from: 0, to: 5, split: true}, {table: p2, from: 5, to: -1, split: true},
	}
	var mu sync.Mutex
	var recorded []selection.Table
	tally := newTableTally(pieces, func(_ context.Context, _ checkpoint.Querier, t selection.Table) error {
		mu.Lock()
		defer mu.Unlock()
		recorded = append(recorded, t)
		return nil
	})
	done := func(i int) {
		if err := tally.pieceDone(context.Background(), nil, pieces[i]); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{4, 0, 2} {
		done(i)
	}
	if len(recorded) != 0 {
		t.Fatalf("recorded %v before any table's last piece", recorded)
	}
	done(3)
	if len(recorded) != 1 || recorded[0] != p {
		t.Fatalf("recorded %v, want [%v] once its partitions' pieces are all done", recorded, p)
	}
	done(1)
	if got, want := len(recorded), 2; got != want || recorded[1] != a {
		t.Fatalf("recorded %v, want %v then %v", recorded, p, a)
	}
	var none *tableTally
	if err := none.pieceDone(context.Background(), nil, pieces[0]); err != nil {
		t.Fatalf("no tally: %v", err)
	}
}
