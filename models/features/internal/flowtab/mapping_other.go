//go:build !unix

package flowtab

// mapAnon: no anonymous mappings here; tables stay on the Go heap.
func mapAnon(int) []byte { return nil }

func unmap([]byte) {}
