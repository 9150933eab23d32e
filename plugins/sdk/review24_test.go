package sdk_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk"
)

// stdinProbeEnv makes the test binary, re-executed by
// TestServeDetachesStdin, act as a plugin: its detector factory, which Serve
// calls before it serves, writes what the plugin can read from its standard
// input to the file the variable names, and exits.
const stdinProbeEnv = "VIGIL_SDK_STDIN_PROBE"

func TestMain(m *testing.M) {
	if out := os.Getenv(stdinProbeEnv); out != "" {
		sdk.Serve(func(*slog.Logger) sdk.Detector {
			b, err := io.ReadAll(os.Stdin)
			if err != nil {
				b = []byte("read error: " + err.Error())
			}
			if err := os.WriteFile(out, b, 0o600); err != nil {
				os.Exit(3)
			}
			os.Exit(0)
			return nil
		})
		os.Exit(2) // not reached
	}
	os.Exit(m.Run())
}

// TestServeDetachesStdin: go-plugin starts a plugin with the host's standard
// input (a terminal when an admin runs the agent by hand); a plugin served
// by Serve must not be able to read it.
func TestServeDetachesStdin(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "stdin")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	const secret = "what the admin types\n"
	if _, err := w.WriteString(secret); err != nil {
		t.Fatal(err)
	}
	w.Close()
	defer r.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), stdinProbeEnv+"="+out)
	cmd.Stdin = r // as go-plugin does: cmd.Stdin = os.Stdin
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plugin: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("the plugin read %q from the host's standard input", got)
	}
}
