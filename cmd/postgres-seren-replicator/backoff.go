package main

import (
	"math/rand/v2"
	"time"
)

// Reconnection waits start at backoffBase and double up to the
// --max-retry-delay; a connection that stayed up for healthyAfter counts as
// recovered, and the next wait starts small again.
const (
	backoffBase  = time.Second
	healthyAfter = time.Minute
)

// backoff is the wait between reconnections. Each wait is jittered by up to
// a fifth either way, so that several databases or processes cut off by the
// same fault do not all retry in step.
type backoff struct {
	max  time.Duration
	next time.Duration
	rand func() float64 // in [0, 1); rand.Float64 when nil
}

// wait returns the next wait after a failure of a connection that had been
// up for up, and advances.
func (b *backoff) wait(up time.Duration) time.Duration {
	if b.next == 0 || up >= healthyAfter {
		b.next = backoffBase
	}
	d := min(b.next, b.max)
	b.next = min(b.next*2, b.max)
	r := rand.Float64
	if b.rand != nil {
		r = b.rand
	}
	return time.Duration(float64(d) * (0.8 + 0.4*r()))
}
