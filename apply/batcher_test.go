package apply

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/serenorg/postgres-seren-replicator/checkpoint"
)

// The batcher is driven the way the Applier drives it, by random
// interleavings of stream events (transactions of several changes,
// keepalives), clock ticks, idle timers, pipeline completions and failures
// (restart from the target's checkpoint, with the stream resent from the
// source's confirmed position). A model target holds the checkpoint row and
// counts how often each transaction was applied. Checked throughout: every
// checkpoint write goes from the stored position to a greater one (so the
// SQL guard never fires for a single writer), only durable positions are
// acknowledged, and in the end every transaction was applied exactly once.

type walEvent struct {
	kind      byte // 'B' begin, 'C' change, 'E' commit (end), 'K' keepalive
	txn       int
	lsn       pglogrepl.LSN // begin: commit LSN; commit: end LSN; keepalive: WAL end
	commitLSN pglogrepl.LSN // commit: its commit LSN
}

// wal generates a source stream: transactions in commit order, each a
// Begin, some changes and a Commit, with keepalives between them.
func genWAL(c chooser) []walEvent {
	var out []walEvent
	lsn := pglogrepl.LSN(1000)
	for txn := range 1 + c.intn(25) {
		for c.intn(3) == 0 {
			lsn += pglogrepl.LSN(1 + c.intn(50))
			out = append(out, walEvent{kind: 'K', lsn: lsn})
		}
		commit := lsn + pglogrepl.LSN(1+c.intn(100))
		end := commit + pglogrepl.LSN(1+c.intn(20))
		out = append(out, walEvent{kind: 'B', txn: txn, lsn: commit})
		for range c.intn(5) {
			out = append(out, walEvent{kind: 'C', txn: txn})
		}
		out = append(out, walEvent{kind: 'E', txn: txn, lsn: end, commitLSN: commit})
		lsn = end
	}
	if c.intn(2) == 0 {
		out = append(out, walEvent{kind: 'K', lsn: lsn + pglogrepl.LSN(1+c.intn(50))})
	}
	return out
}

type simFlight struct {
	prev pglogrepl.LSN
	next checkpoint.Position
	txns []int
}

type batchSim struct {
	t   testing.TB
	c   chooser
	wal []walEvent
	log []string

	b       *batcher
	now     time.Time
	cursor  int
	stored  pglogrepl.LSN // the target's checkpoint row
	acked   pglogrepl.LSN // the source's confirmed flush position
	applied map[int]int   // committed applications per transaction
	batch   []int         // transactions in the open target transaction
	flights []simFlight
	current int // transaction being applied, -1 when skipped
}

const simIdleEvery = time.Second

func (s *batchSim) fail(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("%s\nevents:\n%s", fmt.Sprintf(format, args...), strings.Join(s.log, "\n"))
}

func (s *batchSim) restart() {
	s.log = append(s.log, fmt.Sprintf("restart at checkpoint %s, stream from %s", s.stored, s.acked))
	s.b = newBatcher(checkpoint.Position{Slot: "s", EndLSN: s.stored}, 1+s.c.intn(8), time.Duration(s.c.intn(3))*time.Second, 0)
	s.batch, s.flights = nil, nil
	// The source resends every transaction that ends after its confirmed
	// position, which may be behind the target's checkpoint; keepalives are
	// resent from there too.
	s.cursor = len(s.wal)
	for i, ev := range s.wal {
		if ev.kind == 'B' && s.endOf(i) > s.acked || ev.kind == 'K' && ev.lsn > s.acked {
			s.cursor = i
			break
		}
	}
}

func (s *batchSim) endOf(begin int) pglogrepl.LSN {
	for _, ev := range s.wal[begin:] {
		if ev.kind == 'E' {
			return ev.lsn
		}
	}
	return 0
}

func (s *batchSim) close() {
	prev, next, _, _, err := s.b.close()
	if err != nil {
		s.fail("close: %v", err)
	}
	s.log = append(s.log, fmt.Sprintf("close batch %s -> %s with %v", prev, next.EndLSN, s.batch))
	s.flights = append(s.flights, simFlight{prev: prev, next: next, txns: s.batch})
	s.batch = nil
}

func (s *batchSim) keepalive(lsn pglogrepl.LSN) {
	if s.b.keepalive(lsn, s.now, simIdleEvery) {
		s.close()
	}
}

// deliver hands the next stream event to the batcher as the Applier does.
func (s *batchSim) deliver() {
	ev := s.wal[s.cursor]
	s.cursor++
	s.log = append(s.log, fmt.Sprintf("event %c txn %d lsn %s", ev.kind, ev.txn, ev.lsn))
	switch ev.kind {
	case 'B':
		if _, err := s.b.begin(ev.lsn, s.now); err != nil {
			s.fail("begin: %v", err)
		}
		s.current = -1
		if !s.b.skip {
			s.current = ev.txn
			s.batch = append(s.batch, ev.txn)
		}
	case 'C':
		apply, err := s.b.change()
		if err != nil {
			s.fail("change: %v", err)
		}
		if apply != (s.current >= 0) {
			s.fail("change applied = %v in a transaction skipped = %v", apply, s.current < 0)
		}
	case 'E':
		closeNow, err := s.b.commit(ev.lsn, s.now, s.now)
		if err != nil {
			s.fail("commit: %v", err)
		}
		if closeNow {
			s.close()
		}
	case 'K':
		s.keepalive(ev.lsn)
	}
}

// complete commits the oldest flight on the model target, with the guard
// the checkpoint statements enforce in SQL.
func (s *batchSim) complete() {
	f := s.flights[0]
	s.flights = s.flights[1:]
	if f.prev != s.stored || f.next.EndLSN <= s.stored {
		s.fail("checkpoint write %s -> %s while the target holds %s", f.prev, f.next.EndLSN, s.stored)
	}
	s.stored = f.next.EndLSN
	for _, txn := range f.txns {
		s.applied[txn]++
	}
	if err := s.b.committed(f.next); err != nil {
		s.fail("committed: %v", err)
	}
	if s.b.applied.EndLSN > s.stored {
		s.fail("applied %s ahead of the target's %s", s.b.applied.EndLSN, s.stored)
	}
	if s.c.intn(2) == 0 {
		// The Applier acknowledges applied positions once flushed (never
		// beyond what the target holds, durable_test.go); the source hears
		// of them with the next status update, which a crash may prevent.
		s.acked = s.b.applied.EndLSN
	}
	s.log = append(s.log, fmt.Sprintf("committed %s", s.stored))
}

func (s *batchSim) step(allowFailure bool) {
	switch s.c.intn(8) {
	case 0, 1, 2:
		if s.cursor < len(s.wal) {
			s.deliver()
		}
	case 3:
		if s.b.idleClose() {
			s.close() // the stream is momentarily empty
		}
	case 4:
		if lsn, at, ok := s.b.idleDue(simIdleEvery); ok && !s.now.Before(at) {
			s.log = append(s.log, fmt.Sprintf("idle timer %s", lsn))
			s.keepalive(lsn)
		}
	case 5:
		if len(s.flights) > 0 {
			s.complete()
		}
	case 6:
		s.now = s.now.Add(time.Duration(s.c.intn(1500)) * time.Millisecond)
	case 7:
		if allowFailure && s.c.intn(4) == 0 {
			s.restart()
		}
	}
}

func checkBatcher(t testing.TB, c chooser) {
	s := &batchSim{t: t, c: c, wal: genWAL(c), applied: map[int]int{}, now: time.Unix(1e9, 0), stored: 900, acked: 900}
	s.restart()
	for range 10 + c.intn(200) {
		s.step(true)
	}
	// Drain without failures: everything must end applied exactly once.
	for guard := 0; s.cursor < len(s.wal) || s.b.open || len(s.flights) > 0; guard++ {
		if guard > 100_000 {
			s.fail("does not drain")
		}
		switch {
		case s.cursor < len(s.wal) && c.intn(2) == 0:
			s.deliver()
		case s.b.idleClose():
			s.close()
		case len(s.flights) > 0:
			s.complete()
		case s.cursor < len(s.wal):
			s.deliver()
		}
	}
	for _, ev := range s.wal {
		if ev.kind == 'E' && s.applied[ev.txn] != 1 {
			s.fail("transaction %d applied %d times", ev.txn, s.applied[ev.txn])
		}
	}
}

func TestBatcherMatchesModel(t *testing.T) {
	for seed := range uint64(propertyCases()) {
		checkBatcher(t, randChooser{rand.New(rand.NewPCG(seed, 2))})
	}
}

func FuzzBatcher(f *testing.F) {
	f.Add([]byte{3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkBatcher(t, &byteChooser{b: b})
	})
}

// A keepalive held back by the idle rate limit must not be written after a
// later transaction's checkpoint was queued (it moved the checkpoint back).
func TestBatcherHeldKeepaliveNeverMovesBack(t *testing.T) {
	now := time.Unix(1e9, 0)
	b := newBatcher(checkpoint.Position{EndLSN: 100}, 10, time.Second, 0)
	if !b.keepalive(200, now, time.Second) {
		t.Fatal("first keepalive not checkpointed")
	}
	if _, _, _, _, err := b.close(); err != nil {
		t.Fatal(err)
	}
	b.keepalive(300, now.Add(10*time.Millisecond), time.Second) // held back
	if open, _ := b.begin(400, now); !open {
		t.Fatal("transaction did not open a batch")
	}
	if _, err := b.commit(450, now, now.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, next, _, _, err := b.close(); err != nil || next.EndLSN != 450 {
		t.Fatalf("close = %v, %v", next.EndLSN, err)
	}
	if lsn, _, ok := b.idleDue(time.Second); ok {
		t.Fatalf("held keepalive %s still due after 450 was written", lsn)
	}
	if b.keepalive(300, now.Add(3*time.Second), time.Second) {
		t.Fatal("keepalive behind the written position opened a batch")
	}
}
