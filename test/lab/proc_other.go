//go:build !linux

package lab

import (
	"errors"
	"os"
	"syscall"
)

// sysProcAttr: outside Linux there is no parent-death signal; Stop ends the
// programs.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }

// tryLock: the node network, which locks its slot, runs on Linux only.
func tryLock(*os.File) error { return errors.New("lab: slot locks need Linux") }
