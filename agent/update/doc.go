// Package update is the agent's model updater: it receives model offers from the server (or a
// bundle file on an air-gapped sensor), downloads the bundle over FETCH (resumable, bounded,
// digest-checked), reads it once into memory (the bytes hashed, verified and staged are the same),
// verifies it (threshold of trusted signatures with models/trust, digests, version strictly
// greater than the active one, than the slot's version floor (the highest version ever activated
// there), than the floors of the feature set's other versions (a plugin runs one model for
// nethost/v6 and nethost/v7) and than the installed baseline, unless a signed rollback instruction
// (models/rollback) names it that was issued after the last update of the feature set's model and
// after the last instruction applied (replay protection: replay.go), not expired, detector,
// feature set and dimension supported by the plugin), stages it (write, fsync, atomic rename), asks the detector plugin to load it, checks
// its health (the plugin's Health is OK and a built-in probe batch scores finite), and then
// activates it (atomic pointer file) or rolls back to the previous model (or the installed
// baseline; with neither, the update is rejected with ErrNotRestored). Every step is reported to
// the server as a wire ModelStatus (offered, fetched, verified, active, rejected, rolled_back,
// shadow).
//
// Crash safety: the active model of a slot is whatever its pointer file names; the pointer is
// replaced atomically only after the new model passed its health check, and the bundle it named
// before is remembered in a "previous" pointer (not after a signed downgrade: the model rolled
// back from is never a fallback). A crash at any step therefore leaves the old or the new model
// active, never none; Recover (run at every start) repairs a pointer whose bundle is missing or
// damaged by falling back to the previous one, and removes stale temporary files.
//
// Several processes may share a state directory (a running agent and `vigil-agent update`):
// Install, Recover and the stopping of a shadow model hold an flock(2) of <state>/models/.lock.
//
// The package is part of the agent core: pure Go, it never imports server/... and never links
// ONNX Runtime (models are loaded by the plugin, through the ModelLoader interface).
package update
