package pluginhost

import (
	"sync"

	"golang.org/x/sys/unix"
)

// SetLandlockProbe replaces the Landlock probe (tests), re-arms the
// once-per-process warning about an unconfined plugin, and returns a
// function that restores the probe.
func SetLandlockProbe(probe func() (int, error)) (restore func()) {
	old := landlockABI
	landlockABI = probe
	warnUnconfined = sync.Once{}
	return func() { landlockABI = old }
}

// SetSocketFilter replaces the seccomp socket filter (tests: an error
// stands for an architecture without one, an empty program for a filter the
// kernel refuses), re-arms the once-per-process warning about an unfiltered
// plugin, and returns a function that restores the filter.
func SetSocketFilter(filter func() (*unix.SockFprog, error)) (restore func()) {
	old := socketFilter
	socketFilter = filter
	warnUnfiltered = sync.Once{}
	return func() { socketFilter = old }
}

// SocketFilterSupported reports whether the host has a socket filter for
// the running architecture.
func SocketFilterSupported() bool {
	_, err := socketFilter()
	return err == nil
}

// HelperBinary is helperBinary for the external tests.
var HelperBinary = helperBinary
