package stream

import (
	"testing"
	"time"
)

// The stream pauses before a read only inside a large transaction and only
// after a read that waited for the source: small transactions, and reads
// that find data waiting, are never delayed.
func TestCoalescerPausesOnlyInsideLargeTransactionsThatWait(t *testing.T) {
	var c coalescer
	fast, slow := time.Microsecond, time.Millisecond
	txn := func(rows int, took time.Duration) (pauses int) {
		before := c.pauses
		c.message(&Begin{})
		for range rows {
			c.pause()
			c.read(took)
			c.message(&Insert{})
		}
		c.pause()
		c.read(took)
		c.message(&Commit{})
		return c.pauses - before
	}
	for range 100 {
		if n := txn(3, slow); n != 0 {
			t.Fatalf("a 3-row transaction whose reads waited paused %d times", n)
		}
	}
	if n := txn(coalesceAfter-1, slow); n != 0 {
		t.Fatalf("a transaction of %d rows paused %d times", coalesceAfter-1, n)
	}
	if n := txn(5000, fast); n != 0 {
		t.Fatalf("a 5000-row transaction whose reads found data waiting paused %d times", n)
	}
	if n := txn(5000, slow); n != 5000-coalesceAfter+1 {
		t.Fatalf("a 5000-row transaction whose reads waited paused %d times, want %d", n, 5000-coalesceAfter+1)
	}
	c.message(&Begin{})
	if d := c.pause(); d != 0 {
		t.Fatalf("pause right after Begin = %s", d)
	}
}
