package stream

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// pendingTxns against a model: a plain list of every transaction begun and
// not yet covered by the durable position, over random interleavings.
func TestPendingTxnsMatchesModel(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for seed := range uint64(2000) {
		rng := rand.New(rand.NewPCG(seed, 1))
		var p pendingTxns
		var model []txnStamp
		var next, durable pglogrepl.LSN = 100, 0
		for step := 0; step < 200; step++ {
			if rng.IntN(3) > 0 {
				next += pglogrepl.LSN(1 + rng.IntN(50))
				ts := txnStamp{final: next, commit: base.Add(time.Duration(next) * time.Millisecond)}
				p.begun(ts.final, ts.commit)
				model = append(model, ts)
				next += 8 // the commit record's length: its end is past final
			} else if next > durable {
				durable += pglogrepl.LSN(rng.IntN(int(next-durable) + 1))
				p.applied(durable)
				for len(model) > 0 && model[0].final < durable {
					model = model[1:]
				}
			}
			got, ok := p.oldest()
			if ok != (len(model) > 0) || ok && !got.Equal(model[0].commit) {
				t.Fatalf("seed %d step %d: oldest = %v %v, model %v", seed, step, got, ok, model)
			}
		}
	}
}

// Lag is 0 with nothing pending, and the age of the oldest pending commit
// otherwise.
func TestLagFollowsTheOldestPendingTransaction(t *testing.T) {
	s := &Stream{}
	if got := s.Lag(); got != 0 {
		t.Fatalf("lag with nothing pending = %s", got)
	}
	s.pending.begun(100, time.Now().Add(-3*time.Second))
	s.pending.begun(200, time.Now().Add(-time.Second))
	if got := s.Lag(); got < 3*time.Second || got > 4*time.Second {
		t.Fatalf("lag = %s, want about 3s", got)
	}
	s.SetFlushed(150)
	if got := s.Lag(); got < time.Second || got > 2*time.Second {
		t.Fatalf("lag after the first applied = %s, want about 1s", got)
	}
	s.SetFlushed(210)
	if got := s.Lag(); got != 0 {
		t.Fatalf("lag when caught up = %s", got)
	}
}
