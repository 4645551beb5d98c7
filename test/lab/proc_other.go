//go:build !linux

package lab

import "syscall"

// sysProcAttr: outside Linux there is no parent-death signal; Stop ends the
// programs.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
