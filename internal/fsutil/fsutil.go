// Package fsutil writes files so that a crash leaves either their old or
// their new content, never a mix or an empty file, and reads files that
// others may have replaced without waiting on a named pipe or device.
package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// TempPrefix starts the names of WriteFile's temporary files: a crash can
// leave one behind, and a cleaner may remove those older than any write.
const TempPrefix = ".tmp-"

// WriteFile writes data to a temporary file in path's directory (mode
// mode), fsyncs it, renames it over path and fsyncs the directory.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, TempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := f.Name()
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(dir)
}

// SyncDir fsyncs the directory dir, making the names just created or
// renamed into it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
