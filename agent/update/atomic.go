package update

import "os"

// WriteFileAtomic writes data to path so that, after a crash, path holds
// either its old or its new content (a temporary file in the same
// directory, fsynced, renamed over path, the directory fsynced). Other
// agent state (the detectors' calibrations) is written the same way.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	return writeFileAtomic(path, data, mode)
}
