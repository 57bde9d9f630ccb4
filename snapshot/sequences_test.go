package snapshot

import (
	"context"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/tests/pgtest"
)

// Sequences only ever move forward on the target: a target sequence behind
// the source's catches up (ascending, descending, never called), one already
// ahead (the application writes to the target after the cutover) stays.
func TestSyncSequencesOnlyMovesForward(t *testing.T) {
	src, dst := pgtest.StartPair(t)
	schema := `CREATE SEQUENCE up; CREATE SEQUENCE down INCREMENT -1 MINVALUE -1000 MAXVALUE -1 START -1;
		CREATE SEQUENCE ahead; CREATE SEQUENCE fresh; CREATE SEQUENCE top MAXVALUE 9223372036854775807 START 9223372036854775800;`
	src.Exec("postgres", schema)
	dst.Exec("postgres", schema)
	src.Exec("postgres", `SELECT nextval('up') FROM generate_series(1, 10); SELECT nextval('down') FROM generate_series(1, 5);
		SELECT nextval('ahead') FROM generate_series(1, 3); SELECT nextval('top') FROM generate_series(1, 7);`)
	dst.Exec("postgres", `SELECT nextval('ahead') FROM generate_series(1, 50);`)
	ctx := context.Background()
	n, err := SyncSequences(ctx, src.Connect("postgres"), dst.Connect("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("moved %d sequences, want 3 (up, down, top)", n)
	}
	for seq, want := range map[string]string{"up": "10 true", "down": "-5 true", "ahead": "50 true", "fresh": "1 false", "top": "9223372036854775806 true"} {
		if got := dst.QueryString("postgres", "SELECT last_value || ' ' || is_called FROM "+seq); got != want {
			t.Errorf("target %s = %s, want %s", seq, got, want)
		}
	}
	// Once more: nothing left to move.
	if n, err = SyncSequences(ctx, src.Connect("postgres"), dst.Connect("postgres")); err != nil || n != 0 {
		t.Errorf("second sync moved %d (err %v), want 0", n, err)
	}
}
