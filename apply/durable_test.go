package apply

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// The ack queue is driven against a model target: a WAL that batches'
// commit records (and other sessions' records) are appended to, a flush
// position the WAL writer moves forward at random moments, and crashes that
// keep only what was flushed. The Applier feeds the queue what it reads on
// the target: after an asynchronous COMMIT the insert position (at or past
// the commit record's end) and the flush position; after a synchronous one
// the same, its own record being flushed; after a poll the flush position.
// Checked throughout: the position acknowledged never moves back and is
// never ahead of the checkpoint a crash at that moment would leave on the
// target; and after a synchronous flush or a poll following a full WAL
// flush, every committed batch is acknowledged.

type ackSim struct {
	t   testing.TB
	c   chooser
	log []string

	q      *ackQueue
	now    time.Time
	src    pglogrepl.LSN // source end LSN of the last committed batch
	insert pglogrepl.LSN // the target's WAL insert position
	flush  pglogrepl.LSN // the target's WAL flush position
	// records are the committed batches on the target: where each commit
	// record ends, and the source position its checkpoint row holds.
	records []ackRecord
	acked   pglogrepl.LSN // what the source heard
}

type ackRecord struct{ walEnd, src pglogrepl.LSN }

func (s *ackSim) fail(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("%s\nevents:\n%s", fmt.Sprintf(format, args...), strings.Join(s.log, "\n"))
}

// survivor is the checkpoint a crash now would leave: the newest batch
// whose commit record is flushed.
func (s *ackSim) survivor() pglogrepl.LSN {
	cp := pglogrepl.LSN(1000)
	for _, r := range s.records {
		if r.walEnd <= s.flush {
			cp = r.src
		}
	}
	return cp
}

// otherWAL appends records of other sessions (or none).
func (s *ackSim) otherWAL() {
	for s.c.intn(3) == 0 {
		s.insert += pglogrepl.LSN(1 + s.c.intn(200))
	}
}

// walWriter flushes the WAL to a random point up to the insert position.
func (s *ackSim) walWriter() {
	if s.flush < s.insert {
		s.flush += pglogrepl.LSN(s.c.intn(int(s.insert-s.flush) + 1))
	}
}

func (s *ackSim) ack(lsn pglogrepl.LSN, moved bool) {
	if lsn < s.acked {
		s.fail("acknowledged position moved back from %s to %s", s.acked, lsn)
	}
	if moved && lsn == s.acked {
		s.fail("moved reported for an unchanged position %s", lsn)
	}
	s.acked = lsn
	if cp := s.survivor(); s.acked > cp {
		s.fail("acknowledged %s while a crash would leave the checkpoint at %s (WAL flushed to %s)", s.acked, cp, s.flush)
	}
}

// commit commits one batch on the model target and feeds the queue what
// the Applier reads in the same round trip.
func (s *ackSim) commit(sync bool) {
	s.src += pglogrepl.LSN(1 + s.c.intn(100))
	s.otherWAL()
	s.insert += pglogrepl.LSN(1 + s.c.intn(300)) // the batch's changes
	s.insert += pglogrepl.LSN(1 + s.c.intn(40))  // its commit record
	s.records = append(s.records, ackRecord{walEnd: s.insert, src: s.src})
	if sync {
		s.flush = max(s.flush, s.insert)
	}
	if s.c.intn(2) == 0 {
		s.walWriter()
	}
	s.otherWAL() // between COMMIT and the SELECT that follows it
	readInsert, readFlush := s.insert, s.flush
	s.log = append(s.log, fmt.Sprintf("commit src %s wal end %s sync %v; read insert %s flush %s", s.src, s.records[len(s.records)-1].walEnd, sync, readInsert, readFlush))
	if err := s.q.committed(s.src, readInsert, s.now); err != nil {
		s.fail("committed: %v", err)
	}
	if sync {
		s.ack(s.q.durable(s.src))
	} else {
		s.ack(s.q.flushed(readFlush))
	}
}

func (s *ackSim) poll() {
	s.log = append(s.log, fmt.Sprintf("poll flush %s", s.flush))
	s.ack(s.q.flushed(s.flush))
}

// syncFlush is the Applier's synchronous flush: a commit record of its own,
// flushed, then the flush position read.
func (s *ackSim) syncFlush() {
	s.otherWAL()
	s.insert += pglogrepl.LSN(1 + s.c.intn(40))
	s.flush = max(s.flush, s.insert)
	s.otherWAL()
	s.log = append(s.log, fmt.Sprintf("sync flush to %s", s.flush))
	s.ack(s.q.flushed(s.flush))
	if s.q.waiting() || s.acked != s.src {
		s.fail("after a synchronous flush %s is acknowledged, %s committed", s.acked, s.src)
	}
}

// crash keeps only what was flushed; the Applier restarts from the
// surviving checkpoint, which the source must still have.
func (s *ackSim) crash() {
	cp := s.survivor()
	s.log = append(s.log, fmt.Sprintf("crash: WAL kept to %s, checkpoint %s, acknowledged %s", s.flush, cp, s.acked))
	if s.acked > cp {
		s.fail("crash left the checkpoint at %s behind the acknowledged %s", cp, s.acked)
	}
	n := 0
	for n < len(s.records) && s.records[n].walEnd <= s.flush {
		n++
	}
	s.records = s.records[:n]
	s.insert = s.flush
	s.src = cp
	s.q = newAckQueue(cp)
}

func checkAckQueue(t testing.TB, c chooser) {
	s := &ackSim{t: t, c: c, now: time.Unix(1e9, 0), src: 1000, acked: 1000, insert: 5000, flush: 5000}
	s.q = newAckQueue(1000)
	for range 10 + c.intn(300) {
		switch c.intn(9) {
		case 0, 1, 2:
			s.commit(false)
		case 3:
			s.commit(c.intn(4) == 0)
		case 4:
			s.walWriter()
		case 5:
			s.poll()
		case 6:
			s.now = s.now.Add(time.Duration(c.intn(400)) * time.Millisecond)
			if s.q.overdue(s.now, forceFlushAfter) && c.intn(2) == 0 {
				s.syncFlush()
			}
		case 7:
			s.otherWAL()
		case 8:
			if c.intn(5) == 0 {
				s.crash()
			}
		}
		if s.q.overdue(s.now, 0) != s.q.waiting() {
			s.fail("overdue(0) = %v with waiting = %v", s.q.overdue(s.now, 0), s.q.waiting())
		}
	}
	// Once the WAL writer catches up, a poll acknowledges everything.
	s.flush = s.insert
	s.poll()
	if s.q.waiting() || s.acked != s.src {
		s.fail("WAL flushed to %s, yet %s is acknowledged of %s committed", s.flush, s.acked, s.src)
	}
}

func TestAckQueueMatchesModel(t *testing.T) {
	for seed := range uint64(propertyCases()) {
		checkAckQueue(t, randChooser{rand.New(rand.NewPCG(seed, 3))})
	}
}

func FuzzAckQueue(f *testing.F) {
	f.Add([]byte{0, 4, 5, 3, 1, 8, 0, 2, 6, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAckQueue(t, &byteChooser{b: b})
	})
}

// A batch that commits before the previous one's position is refused: the
// queue's order is the checkpoint's.
func TestAckQueueRefusesOutOfOrder(t *testing.T) {
	q := newAckQueue(100)
	now := time.Unix(1e9, 0)
	if err := q.committed(100, 10, now); err == nil {
		t.Error("a batch at the acknowledged position was accepted")
	}
	if err := q.committed(200, 10, now); err != nil {
		t.Fatal(err)
	}
	if err := q.committed(150, 20, now); err == nil {
		t.Error("a batch behind the last one was accepted")
	}
	if got, moved := q.flushed(9); moved || got != 100 {
		t.Errorf("flushed(9) = %s, %v; want 0/64, false", got, moved)
	}
	if got, moved := q.flushed(10); !moved || got != 200 {
		t.Errorf("flushed(10) = %s, %v; want 0/C8, true", got, moved)
	}
}
