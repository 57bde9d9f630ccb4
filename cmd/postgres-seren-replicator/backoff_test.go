package main

import (
	"testing"
	"time"
)

func TestBackoffDoublesJittersAndResets(t *testing.T) {
	r := 0.5 // the middle of the jitter: no change
	b := backoff{max: 5 * time.Second, rand: func() float64 { return r }}
	var got []time.Duration
	for range 5 {
		got = append(got, b.wait(time.Second))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v", got, want)
		}
	}
	if d := b.wait(2 * time.Minute); d != time.Second {
		t.Errorf("after a healthy connection the wait is %s, want 1s again", d)
	}
	r = 0
	if d := b.wait(0); d != 1600*time.Millisecond {
		t.Errorf("lowest jitter of 2s = %s, want 1.6s", d)
	}
	r = 0.999999
	if d := b.wait(0); d < 4700*time.Millisecond || d > 4800*time.Millisecond {
		t.Errorf("highest jitter of 4s = %s, want about 4.8s", d)
	}
}
