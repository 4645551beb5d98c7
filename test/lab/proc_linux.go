package lab

import "syscall"

// sysProcAttr makes the kernel kill a lab program when the process that
// started it dies, so a test binary killed by a timeout leaves nothing behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
