package ctl

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestHelpHidesToken: `vigilctl --help` (and any subcommand's) must not print
// the API token taken from VIGIL_TOKEN as the flag's default: help output is
// pasted into tickets and chats, and the token is a bearer secret.
func TestHelpHidesToken(t *testing.T) {
	const secret = "vgu_secretid.SECRETSECRETSECRET"
	for _, args := range [][]string{{"--help"}, {"findings", "list", "--help"}, {"token", "create", "--help"}} {
		var out, errb bytes.Buffer
		app := &App{Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
			return map[string]string{"VIGIL_TOKEN": secret, "VIGIL_SERVER": "https://vigil.test:8443"}[k]
		}}
		root := NewRoot(app)
		root.SetArgs(args)
		if err := root.ExecuteContext(context.Background()); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if s := out.String() + errb.String(); strings.Contains(s, "SECRET") {
			t.Errorf("vigilctl %s prints the token from VIGIL_TOKEN:\n%s", strings.Join(args, " "), s)
		}
		if !strings.Contains(out.String(), "--token") {
			t.Errorf("vigilctl %s: no --token flag in the help:\n%s", strings.Join(args, " "), out.String())
		}
	}
	// The token from the environment is still the one used.
	app := &App{Getenv: func(k string) string { return map[string]string{"VIGIL_TOKEN": secret}[k] }}
	root := NewRoot(app)
	if err := root.ParseFlags(nil); err != nil {
		t.Fatal(err)
	}
	if app.Token != secret {
		t.Errorf("token from VIGIL_TOKEN = %q, want %q", app.Token, secret)
	}
}
