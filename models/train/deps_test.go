package train

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyBoundaries: nothing in models/ imports a plugin, and only models/runtime links
// ONNX Runtime (cgo), besides the trainer mains in models/cmd/..., which calibrate thresholds on
// the int8 model's own scores in ONNX Runtime.
func TestDependencyBoundaries(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "github.com/vigil-edge/vigil/models/...").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "github.com/vigil-edge/vigil/models/") {
			continue
		}
		pkg := fields[0]
		for _, dep := range fields[1:] {
			if strings.HasPrefix(dep, "github.com/vigil-edge/vigil/plugins/") && !strings.HasPrefix(dep, "github.com/vigil-edge/vigil/plugins/sdk/event") {
				t.Errorf("%s imports plugin package %s", pkg, dep)
			}
			if dep == "github.com/yalue/onnxruntime_go" && !strings.HasPrefix(pkg, "github.com/vigil-edge/vigil/models/runtime") &&
				!strings.HasPrefix(pkg, "github.com/vigil-edge/vigil/models/cmd/") {
				t.Errorf("%s links ONNX Runtime (only models/runtime may)", pkg)
			}
		}
	}
}
