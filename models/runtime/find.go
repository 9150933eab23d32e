package runtime

import (
	"os"
	"path/filepath"
)

// FindLibrary locates libonnxruntime.so for a binary: the given path if set,
// else $ONNXRUNTIME_LIB, else ../lib/libonnxruntime.so and
// lib/libonnxruntime.so next to the running executable (the layout of both
// bin/ and the installed packages). It returns "" when none exists.
func FindLibrary(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if v := os.Getenv("ONNXRUNTIME_LIB"); v != "" {
		return v
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	dir := filepath.Dir(exe)
	for _, p := range []string{
		filepath.Join(dir, "..", "lib", "libonnxruntime.so"),
		filepath.Join(dir, "lib", "libonnxruntime.so"),
	} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}
