//go:build !linux

package snapshot

import "syscall"

// childAttr is nil where a child cannot be tied to its parent's life.
func childAttr() *syscall.SysProcAttr { return nil }
