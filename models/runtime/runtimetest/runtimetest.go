// Package runtimetest finds the ONNX Runtime shared library for tests and skips them clearly when
// it is absent.
package runtimetest

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// RepoLibrary is where the build keeps the library, relative to the repository root.
const RepoLibrary = ".cache/onnxruntime-1.24.3/libonnxruntime.so"

// LibraryPath returns $ONNXRUNTIME_LIB, else the repository's cached copy, else "".
func LibraryPath() string {
	if p := os.Getenv("ONNXRUNTIME_LIB"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	// file is <repo>/models/runtime/runtimetest/runtimetest.go
	p := filepath.Join(filepath.Dir(file), "..", "..", "..", RepoLibrary)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// Library returns the library path or skips the test.
func Library(tb testing.TB) string {
	tb.Helper()
	p := LibraryPath()
	if p == "" {
		tb.Skip("ONNX Runtime library not found: set ONNXRUNTIME_LIB (ONNX Runtime 1.24.x, C API 24) or fetch it to " + RepoLibrary)
	}
	return p
}
