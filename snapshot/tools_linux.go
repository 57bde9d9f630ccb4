package snapshot

import "syscall"

// childAttr makes pg_dump and pg_restore die with the process that started
// them: a killed init must not leave one building indexes or restoring
// while init runs again and resumes.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
