package update

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestPluginEnvFor: the updater's plugin gets the ONNX Runtime library that
// lies next to it (bin/lib in a build tree, ../lib in the packages), so its
// sandbox lets it read it; an ONNXRUNTIME_LIB already set wins, and none is
// invented where there is no library. `vigil-agent update` from bin/ failed
// without ONNXRUNTIME_LIB in the environment: the plugin found bin/lib
// itself, and its sandbox refused it.
func TestPluginEnvFor(t *testing.T) {
	root := t.TempDir()
	write := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	buildTree := write(filepath.Join(root, "bin", "vigil-detector-netflow"))
	buildLib := write(filepath.Join(root, "bin", "lib", "libonnxruntime.so"))
	pkg := write(filepath.Join(root, "usr", "lib", "vigil", "plugins", "vigil-detector-netflow"))
	pkgLib := write(filepath.Join(root, "usr", "lib", "vigil", "lib", "libonnxruntime.so"))
	bare := write(filepath.Join(root, "elsewhere", "vigil-detector-netflow"))
	link := filepath.Join(root, "link", "vigil-detector-netflow")
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(pkg, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		env    []string
		plugin string
		want   []string
	}{
		{"build tree", []string{"A=1"}, buildTree, []string{"A=1", "ONNXRUNTIME_LIB=" + buildLib}},
		{"package", nil, pkg, []string{"ONNXRUNTIME_LIB=" + pkgLib}},
		{"through a link", nil, link, []string{"ONNXRUNTIME_LIB=" + pkgLib}},
		{"set already", []string{"ONNXRUNTIME_LIB=/opt/ort.so"}, buildTree, []string{"ONNXRUNTIME_LIB=/opt/ort.so"}},
		{"no library", []string{"A=1"}, bare, []string{"A=1"}},
	} {
		if got := pluginEnvFor(tc.env, tc.plugin); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
