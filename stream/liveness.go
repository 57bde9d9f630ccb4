package stream

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// An idle walsender sends nothing at all: it has no keepalive to send while
// the client confirms everything it was sent. So silence alone proves
// nothing; an unanswered request for a reply does. Halfway through the
// receive timeout the stream asks the source to reply at once; at three
// quarters it warns; at the full timeout it gives the connection up.

// heard records that the source was heard from (or that reading resumes
// after a pause the source is not to blame for).
func (s *Stream) heard() {
	s.heardAt.Store(time.Now().UnixNano())
	s.pinged = false
	s.pingedAt.Store(0)
}

func (s *Stream) heardTime() time.Time { return time.Unix(0, s.heardAt.Load()) }

// Unanswered is how long a request for a reply has gone unanswered: 0 while
// the source answers, growing while the connection or the source is stuck.
// Safe to call from any goroutine.
func (s *Stream) Unanswered() time.Duration {
	at := s.pingedAt.Load()
	if at == 0 {
		return 0
	}
	return time.Since(time.Unix(0, at))
}

// ReceiveTimeout is the receive timeout in force.
func (s *Stream) ReceiveTimeout() time.Duration { return s.cfg.ReceiveTimeout }

// checkSilence runs when a read times out: it asks a silent source for a
// reply, warns when none comes, and gives the connection up (ErrSilent)
// after the receive timeout.
func (s *Stream) checkSilence(ctx context.Context) error {
	silent := time.Since(s.heardTime())
	timeout := s.cfg.ReceiveTimeout
	switch {
	case silent >= timeout:
		return fmt.Errorf("slot %s: the source sent nothing for %s, not even a reply to a request for one (--receive-timeout %s): %w",
			s.cfg.Slot, silent.Round(time.Second), timeout, ErrSilent)
	case silent >= timeout*3/4 && !s.warned:
		s.warned = true
		s.log.Warn("source does not answer on the replication connection; the connection is dead or the network drops packets",
			"slot", s.cfg.Slot, "silent_for", silent.Round(time.Second).String(), "reconnect_in", (timeout - silent).Round(time.Second).String())
	case silent >= timeout/2 && !s.pinged:
		s.pinged = true
		s.warned = false
		s.pingedAt.Store(time.Now().UnixNano())
		return s.sendStatus(ctx, true)
	}
	return nil
}

// Lag is how long ago the oldest transaction received but not yet applied
// (committed on the target) committed on the source; 0 when every received transaction is
// applied, whatever else the source's other databases write.
func (s *Stream) Lag() time.Duration {
	at, ok := s.pending.oldest()
	if !ok {
		return 0
	}
	return max(time.Since(at), 0)
}

// pendingTxns lists the commit times of transactions received and not yet
// applied, in commit order. Its length is bounded by what fits
// between the stream and the target: the event buffer and the batches in
// flight.
type pendingTxns struct {
	mu   sync.Mutex
	txns []txnStamp
	head int
}

type txnStamp struct {
	final  pglogrepl.LSN // the commit record's position
	commit time.Time
}

// begun records a transaction whose Begin arrived.
func (p *pendingTxns) begun(final pglogrepl.LSN, commit time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.txns = append(p.txns, txnStamp{final: final, commit: commit})
}

// applied drops the transactions that end at or before the applied
// position lsn (a commit record's end is past its start).
func (p *pendingTxns) applied(lsn pglogrepl.LSN) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.head < len(p.txns) && p.txns[p.head].final < lsn {
		p.head++
	}
	if p.head == len(p.txns) {
		p.txns, p.head = p.txns[:0], 0
	} else if p.head > len(p.txns)/2 {
		p.txns = append(p.txns[:0], p.txns[p.head:]...)
		p.head = 0
	}
}

// oldest is the commit time of the oldest pending transaction.
func (p *pendingTxns) oldest() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.head == len(p.txns) {
		return time.Time{}, false
	}
	return p.txns[p.head].commit, true
}
