package pluginhost

import "sync"

// SetLandlockProbe replaces the Landlock probe (tests), re-arms the
// once-per-process warning about an unconfined plugin, and returns a
// function that restores the probe.
func SetLandlockProbe(probe func() (int, error)) (restore func()) {
	old := landlockABI
	landlockABI = probe
	warnUnconfined = sync.Once{}
	return func() { landlockABI = old }
}
