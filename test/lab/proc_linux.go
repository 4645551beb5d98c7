package lab

import (
	"os"
	"syscall"
)

// sysProcAttr makes the kernel kill a lab program when the process that
// started it dies, so a test binary killed by a timeout leaves nothing behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// tryLock takes an exclusive flock(2) on f without waiting; the kernel
// releases it when f is closed or the process ends.
func tryLock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
