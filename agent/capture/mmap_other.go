//go:build !unix

package capture

import "os"

// fileMap is not available here: pcapReader reads the file.
type fileMap struct {
	data []byte
	off  int64
}

func newFileMap(*os.File) *fileMap { return nil }

func (m *fileMap) size() (int64, error)                         { return 0, nil }
func (m *fileMap) window(off int64, length int) ([]byte, error) { return nil, nil }
func (m *fileMap) unmap()                                       {}

var pageSize = int64(4096)

const mapWindow = 1 << 20
