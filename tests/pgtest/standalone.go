package pgtest

import (
	"fmt"
	"os"
)

// Standalone is a TB for programs (the demo, the benchmarks) that run
// clusters outside a test: failures print and exit 1 after cleaning up.
type Standalone struct {
	cleanups []func()
	// BeforeExit, when set, runs after the cleanups when a failure ends the
	// program (the benchmarks print what they measured so far).
	BeforeExit func()
}

var _ TB = (*Standalone)(nil)

// Helper does nothing.
func (s *Standalone) Helper() {}

// Fatal prints args, cleans up and exits 1.
func (s *Standalone) Fatal(args ...any) { s.die(fmt.Sprint(args...)) }

// Fatalf prints the message, cleans up and exits 1.
func (s *Standalone) Fatalf(format string, args ...any) { s.die(fmt.Sprintf(format, args...)) }

// Logf prints to standard error.
func (s *Standalone) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// Cleanup registers f to run at Close, last registered first.
func (s *Standalone) Cleanup(f func()) { s.cleanups = append(s.cleanups, f) }

// FailNow cleans up and exits 1.
func (s *Standalone) FailNow() { s.die("failed") }

// Close runs the cleanups: stops and removes the clusters.
func (s *Standalone) Close() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
}

func (s *Standalone) die(msg string) {
	fmt.Fprintln(os.Stderr, "error:", msg)
	s.Close()
	if f := s.BeforeExit; f != nil {
		s.BeforeExit = nil // a failure inside it must not recurse
		f()
	}
	os.Exit(1)
}
