//go:build unix

package flowtab

import "syscall"

// mapAnon maps size bytes of private, zeroed memory, or returns nil.
func mapAnon(size int) []byte {
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil
	}
	adviseHuge(mem)
	return mem
}

func unmap(mem []byte) { _ = syscall.Munmap(mem) }
