//go:build unix && !linux

package flowtab

// adviseHuge: no transparent huge pages to ask for here.
func adviseHuge([]byte) {}
