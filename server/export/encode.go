package export

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/vigil-edge/vigil/server/store"
)

// Formats of exported findings.
const (
	FormatJSON = "json" // the finding as the API shows it (DESIGN.md section 11 names)
	FormatOCSF = "ocsf" // OCSF Detection Finding, class 2004
)

// ValidFormat reports whether f names an export format.
func ValidFormat(f string) bool { return f == FormatJSON || f == FormatOCSF }

// Marshal encodes one finding in format, as one line of JSON (no newline).
func Marshal(f store.Finding, format string) ([]byte, error) {
	var v any = f
	switch format {
	case FormatJSON, "jsonl", "":
	case FormatOCSF:
		v = ToOCSF(f)
	default:
		return nil, fmt.Errorf("export format %q (want json or ocsf)", format)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode finding %d: %w", f.ID, err)
	}
	return b, nil
}

// LineWriter writes findings as JSON lines.
type LineWriter struct {
	w      io.Writer
	format string
}

// NewLineWriter returns a writer of findings in format (json or ocsf), one
// JSON document per line.
func NewLineWriter(w io.Writer, format string) *LineWriter { return &LineWriter{w: w, format: format} }

// Write writes one finding and a newline.
func (lw *LineWriter) Write(f store.Finding) error {
	b, err := Marshal(f, lw.format)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := lw.w.Write(b); err != nil {
		return fmt.Errorf("write finding %d: %w", f.ID, err)
	}
	return nil
}
