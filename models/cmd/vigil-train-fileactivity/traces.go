package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// The recorded sessions are kept as one gzip-compressed file-event trace per
// session (event.TraceWriter, the format `vigil-agent record` writes and
// `vigilctl model train --feature-set fileactivity/v1` reads) and an index,
// sessions.json, with what a trace does not say: each session's kind, its
// workloads, when the attack started, the dropped files and the watcher's
// counters. models/baseline/fileactivity/ holds the traces the shipped model
// is trained on, so that `make models` retrains it without running the
// workloads, byte for byte.

// indexName is the index of a trace folder.
const indexName = "sessions.json"

// maxTraceEvents bounds the events read from one session's trace.
const maxTraceEvents = 1 << 20

// indexEntry is a session without its events, and the name of its trace.
type indexEntry struct {
	Session
	Trace string `json:"trace"`
}

// saveTraces writes sessions into dir.
func saveTraces(dir string, sessions []*Session) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save traces: %w", err)
	}
	var index []indexEntry
	for i, s := range sessions {
		name := fmt.Sprintf("%02d-%s.vft.gz", i, s.Kind)
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		w := event.NewTraceWriter(zw)
		if err := w.Write(s.Events); err != nil {
			return fmt.Errorf("save traces: %s: %w", s.Name, err)
		}
		if err := w.Flush(); err != nil {
			return fmt.Errorf("save traces: %s: %w", s.Name, err)
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("save traces: %s: %w", s.Name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("save traces: %w", err)
		}
		e := indexEntry{Session: *s, Trace: name}
		e.Events = nil
		index = append(index, e)
	}
	js, err := json.MarshalIndent(index, "", "  ")
	if err != nil {
		return fmt.Errorf("save traces: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, indexName), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("save traces: %w", err)
	}
	return nil
}

// loadTraces reads the sessions saved by saveTraces.
func loadTraces(dir string) ([]*Session, error) {
	js, err := os.ReadFile(filepath.Join(dir, indexName))
	if err != nil {
		return nil, fmt.Errorf("load traces: %w", err)
	}
	var index []indexEntry
	if err := json.Unmarshal(js, &index); err != nil {
		return nil, fmt.Errorf("load traces: %s: %w", indexName, err)
	}
	var out []*Session
	for _, e := range index {
		if e.Trace == "" || e.Trace != filepath.Base(e.Trace) || strings.HasPrefix(e.Trace, ".") {
			return nil, fmt.Errorf("load traces: %s: session %q: bad trace name %q", indexName, e.Name, e.Trace)
		}
		evs, partial, err := event.ReadTraceFile(filepath.Join(dir, e.Trace), maxTraceEvents)
		if err == nil && partial != "" {
			err = fmt.Errorf("%s: %s", e.Trace, partial) // a training trace must be whole
		}
		if err != nil {
			return nil, fmt.Errorf("load traces: %w", err)
		}
		s := e.Session
		s.Events = evs
		out = append(out, &s)
	}
	return out, nil
}
