package main

import "fmt"

// errNotBuilt is what a command that does not exist yet in this build
// returns: it must never pretend to have done its job.
func errNotBuilt(name string) error {
	return fmt.Errorf("%s is not implemented in this build yet; nothing was done", name)
}
