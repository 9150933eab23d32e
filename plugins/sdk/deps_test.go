package sdk_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyBoundaries enforces the SDK's import rules: the SDK imports
// neither agent/ nor server/, and runs no processes (os/exec) except in the
// sdktest harness (which builds and re-executes test binaries); the SDK, the
// example detector and the agent's plugin host link no cgo.
func TestDependencyBoundaries(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const mod = "github.com/vigil-edge/vigil/"
	list := func(args ...string) []string {
		out, err := exec.Command("go", append([]string{"list"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %v: %v\n%s", args, err, out)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	for _, line := range list("-f", "{{.ImportPath}} {{join .Imports \" \"}}", mod+"plugins/sdk/...", mod+"plugins/example/...") {
		f := strings.Fields(line)
		pkg := f[0]
		for _, imp := range f[1:] {
			if strings.HasPrefix(imp, mod+"agent/") || strings.HasPrefix(imp, mod+"server/") ||
				(imp == "os/exec" && !strings.HasSuffix(pkg, "/sdktest")) {
				t.Errorf("%s imports %s", pkg, imp)
			}
		}
	}
	for _, root := range []string{mod + "plugins/sdk", mod + "plugins/example/cmd/vigil-detector-example", mod + "agent/pluginhost"} {
		for _, line := range list("-deps", "-f", "{{if not .Standard}}{{.ImportPath}} {{len .CgoFiles}}{{end}}", root) {
			if f := strings.Fields(line); len(f) == 2 && f[1] != "0" {
				t.Errorf("%s depends on cgo package %s", root, f[0])
			}
		}
	}
}
