// Package ctl is the command tree of vigilctl, the admin and analyst CLI. The
// binary's main (server/cmd/vigilctl) only calls Main.
//
// Each command group lives in its own file and adds itself with register in
// an init function (tokens.go, agents.go, users.go, findings.go, audit.go);
// a new group (model, rollout, ...) is one more file doing the same. Groups
// that talk to the server use App.Client, an API client configured from the
// global flags --server, --token and --ca (or VIGIL_SERVER, VIGIL_TOKEN,
// VIGIL_CA).
package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/internal/buildinfo"
	"github.com/vigil-edge/vigil/internal/termsafe"
)

// App is the state shared by all commands: global flags and output streams.
type App struct {
	Server string // API base URL
	Token  string // bearer token, or @FILE
	CAFile string // PEM file of the deployment root (the only trusted root)

	Stdout, Stderr io.Writer
	Getenv         func(string) string

	clientOnce sync.Once
	client     *Client
	clientErr  error
}

// Client returns the API client built from the global flags.
func (a *App) Client() (*Client, error) {
	a.clientOnce.Do(func() { a.client, a.clientErr = NewClient(a.Server, a.Token, a.CAFile) })
	return a.client, a.clientErr
}

// PrintJSON writes v as one indented JSON document to stdout. Strings come
// from sensors and users (summaries, file paths, host names), so the
// control characters encoding/json leaves as they are (DEL, the C1 controls,
// which some terminals read as escape sequences, and the bidi controls,
// which reorder what a reader sees) are written as \u escapes: the document
// decodes to the same values, and no byte of it drives the terminal.
func (a *App) PrintJSON(v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if _, err := a.Stdout.Write(escapeJSONControls(buf.Bytes())); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// escapeJSONControls rewrites every rune of the encoded JSON document doc
// that safeText would escape as a JSON \u escape, except the newlines of
// the indentation (encoding/json escapes those inside strings, and writes
// all of these runes inside strings only).
func escapeJSONControls(doc []byte) []byte {
	if !bytes.ContainsFunc(doc, func(r rune) bool { return r != '\n' && unsafeRune(r) }) {
		return doc
	}
	out := make([]byte, 0, len(doc)+32)
	for i := 0; i < len(doc); {
		r, n := utf8.DecodeRune(doc[i:])
		if r != '\n' && unsafeRune(r) && !(r == utf8.RuneError && n == 1) {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, doc[i:i+n]...)
		}
		i += n
	}
	return out
}

// jsonControlWriter writes a stream of JSON documents (the JSON lines of an
// export) with the runes escapeJSONControls escapes written as \u escapes. A
// rune split across writes is held back until it is whole; Flush writes
// what is held back.
type jsonControlWriter struct {
	w       io.Writer
	pending []byte
}

func (jw *jsonControlWriter) Write(p []byte) (int, error) {
	buf := append(jw.pending, p...)
	cut := len(buf)
	for i := len(buf) - 1; i >= 0 && i >= len(buf)-utf8.UTFMax; i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:]) {
				cut = i
			}
			break
		}
	}
	if _, err := jw.w.Write(escapeJSONControls(buf[:cut])); err != nil {
		return 0, err
	}
	jw.pending = append(jw.pending[:0], buf[cut:]...)
	return len(p), nil
}

// Flush writes a rune still held back (an incomplete one, as it is).
func (jw *jsonControlWriter) Flush() error {
	if len(jw.pending) == 0 {
		return nil
	}
	_, err := jw.w.Write(jw.pending)
	jw.pending = jw.pending[:0]
	return err
}

// group builds one top-level command.
type group struct {
	order int
	build func(*App) *cobra.Command
}

var (
	groupsMu sync.Mutex
	groups   []group
)

// Register adds a top-level command group; order sorts the help listing.
// Call it from an init function in the group's file.
func Register(order int, build func(*App) *cobra.Command) {
	groupsMu.Lock()
	defer groupsMu.Unlock()
	groups = append(groups, group{order, build})
}

// NewRoot builds the vigilctl command tree.
func NewRoot(app *App) *cobra.Command {
	getenv := app.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	root := &cobra.Command{
		Use:           "vigilctl",
		Short:         "Administer a Vigil deployment: enrollment, agents, users, findings, audit",
		Version:       buildinfo.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(app.Stdout)
	root.SetErr(app.Stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&app.Server, "server", envOr(getenv, "VIGIL_SERVER", "https://127.0.0.1:8443"), "API base URL (env VIGIL_SERVER)")
	pf.StringVar(&app.Token, "token", getenv("VIGIL_TOKEN"), "API bearer token, or @FILE to read it from a file (env VIGIL_TOKEN)")
	pf.StringVar(&app.CAFile, "ca", getenv("VIGIL_CA"), "PEM file of the deployment root CA (ca.pem), the only trusted root (env VIGIL_CA)")
	// The token is a bearer secret: help output must not show the value
	// taken from VIGIL_TOKEN as the flag's default.
	pf.Lookup("token").DefValue = ""

	groupsMu.Lock()
	gs := append([]group(nil), groups...)
	groupsMu.Unlock()
	sort.SliceStable(gs, func(i, j int) bool { return gs[i].order < gs[j].order })
	for _, g := range gs {
		root.AddCommand(g.build(app))
	}
	return root
}

func envOr(getenv func(string) string, k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}

// Main runs vigilctl with args (without the program name) and returns the
// exit status. Errors go to stderr, on one line, escaped (termsafe.Text):
// they carry text others control (the server's or a proxy's error bodies,
// names of listed files, agents' host names), which must not move the
// cursor, retitle the terminal, reorder what it shows or add lines.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := &App{Stdout: stdout, Stderr: stderr}
	root := NewRoot(app)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "vigilctl: %s\n", termsafe.Text(err.Error()))
		var ae *APIError
		if errors.As(err, &ae) && (ae.Status == 401 || ae.Status == 403) {
			return 3
		}
		return 1
	}
	return 0
}
