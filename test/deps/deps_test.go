package deps

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/vigil-edge/vigil"

type pkg struct {
	ImportPath string
	Name       string
	Doc        string
	Deps       []string
	Imports    []string
	CgoFiles   []string
	Standard   bool
}

func listPackages(t *testing.T, env ...string) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json", module+"/...")
	cmd.Dir = "../.."
	cmd.Env = append(cmd.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, errb.String())
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(&out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
	}
	return pkgs
}

func own(path, prefix string) bool {
	return path == module+"/"+prefix || strings.HasPrefix(path, module+"/"+prefix+"/")
}

func TestImportBoundaries(t *testing.T) {
	pkgs := listPackages(t)
	rules := []struct {
		from, forbidden, why string
	}{
		{"agent", "server", "the agent never imports the server (they share only wire/ and pki/)"},
		{"server", "agent", "the server never imports the agent"},
		{"plugins/sdk", "agent", "the SDK imports neither agent nor server"},
		{"plugins/sdk", "server", "the SDK imports neither agent nor server"},
		{"models", "plugins/netflow", "models/ imports no plugin"},
		{"models", "plugins/fileactivity", "models/ imports no plugin"},
		{"models", "plugins/example", "models/ imports no plugin"},
		{"wire", "agent", "wire/ belongs to neither side"},
		{"wire", "server", "wire/ belongs to neither side"},
		{"pki", "agent", "pki/ is shared by both sides"},
		{"pki", "server", "pki/ is shared by both sides"},
	}
	for path, p := range pkgs {
		if !strings.HasPrefix(path, module) {
			continue
		}
		for _, r := range rules {
			if !own(path, r.from) {
				continue
			}
			for _, d := range p.Deps {
				// vigilctl (a client, not the server daemon) trains and
				// evaluates models from captures through the agent's
				// decoder, so training and detection see the same packets.
				if (own(path, "server/ctl") || own(path, "server/cmd/vigilctl")) && own(d, "agent/capture") {
					continue
				}
				if own(d, r.forbidden) {
					t.Errorf("%s depends on %s: %s", path, d, r.why)
				}
			}
		}
		// A plugin imports only plugins/sdk, its own packages, models/... and libraries.
		if own(path, "plugins") && !own(path, "plugins/sdk") {
			name := strings.SplitN(strings.TrimPrefix(path, module+"/plugins/"), "/", 2)[0]
			for _, d := range p.Imports {
				if strings.HasPrefix(d, module) && !own(d, "plugins/sdk") && !own(d, "plugins/"+name) && !own(d, "models") && !own(d, "internal") {
					t.Errorf("plugin package %s imports %s: plugins import only plugins/sdk, models/... and libraries", path, d)
				}
			}
		}
	}
}

// TestAgentCoreIsPureGo: the agent core, the server and vigilctl's server
// side never link ONNX Runtime; cgo lives in the detector plugins (and the
// model runtime they share).
func TestAgentCoreIsPureGo(t *testing.T) {
	pkgs := listPackages(t)
	for _, main := range []string{"agent/cmd/vigil-agent", "server/cmd/vigil-server"} {
		p, ok := pkgs[module+"/"+main]
		if !ok {
			t.Logf("%s not built yet", main)
			continue
		}
		for _, d := range p.Deps {
			if strings.Contains(d, "onnxruntime") {
				t.Errorf("%s links %s: the agent core and the server stay free of ONNX Runtime", main, d)
			}
			if dp, ok := pkgs[d]; ok && strings.HasPrefix(d, module) && len(dp.CgoFiles) > 0 {
				t.Errorf("%s depends on %s, which uses cgo", main, d)
			}
		}
	}
}

// TestExecOnlyInPluginHost: os/exec appears only in the plugin host, the
// installer and tests.
func TestExecOnlyInPluginHost(t *testing.T) {
	pkgs := listPackages(t)
	for path, p := range pkgs {
		// agent/capture runs `tcpdump -ddd` to compile tcpdump-syntax BPF
		// filters: no pure-Go compiler of that language exists.
		if !strings.HasPrefix(path, module) || own(path, "agent/pluginhost") || own(path, "installer") || own(path, "test") ||
			own(path, "agent/capture") ||
			// server/registry smoke-loads a published model by starting the
			// matching detector plugin: the server's plugin host.
			own(path, "server/registry") ||
			strings.HasSuffix(path, "test") || own(path, "plugins/sdk") {
			continue
		}
		for _, d := range p.Imports {
			if d == "os/exec" {
				t.Errorf("%s imports os/exec: only the plugin host and the installer start processes", path)
			}
		}
	}
}

// TestPackageDocs: every package of the module states its job.
func TestPackageDocs(t *testing.T) {
	pkgs := listPackages(t)
	for path, p := range pkgs {
		if !strings.HasPrefix(path, module) {
			continue
		}
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment", path)
		}
	}
}
