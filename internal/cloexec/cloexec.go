// Package cloexec keeps the agent's descriptors out of the detector plugins
// it starts.
//
// Go opens every descriptor close-on-exec, and os/exec hands a child only
// the ones it is given. Libraries that make their own system calls need not:
// gopacket's afpacket opens the live capture's AF_PACKET sockets without
// SOCK_CLOEXEC and gives no way to reach the descriptor. A plugin that
// inherited one could read every packet on the monitored interface,
// payloads included, and inject packets there; its sandbox refuses new
// sockets, not inherited ones.
//
// So the plugin host marks every descriptor close-on-exec before each launch
// (All), and code that calls such a library does it inside Open: under
// syscall.ForkLock held for reading, which os/exec takes for writing around
// fork, so no child is forked between the library's open and the marking
// (the rule of the syscall package's ForkLock documentation).
package cloexec

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// All marks every descriptor of the process from 3 on close-on-exec.
func All() error {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// Before Linux 5.11: one descriptor at a time.
	if perr := byProc(); perr != nil {
		return fmt.Errorf("close_range: %w; %w", err, perr)
	}
	return nil
}

// byProc marks the descriptors listed in /proc/self/fd from 3 on.
func byProc() error {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list descriptors: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list descriptors: %w", err)
	}
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd < 3 {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC)
		}
	}
	return nil
}

// Open runs fn, which opens descriptors without close-on-exec and does not
// block, so that no child process can inherit them: no fork happens until
// they are marked. fn's error is returned as it is.
func Open(fn func() error) error {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	ferr := fn()
	if err := All(); err != nil && ferr == nil {
		return err
	}
	return ferr
}
