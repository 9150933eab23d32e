package pluginhost

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends go-plugin's own log lines to slog. go-plugin also parses
// the plugin's stderr JSON through a logger named after the plugin binary;
// its parser panics on a non-string "@message" (a plugin could crash the
// agent with one line), so that named logger is switched off and the host
// forwards stderr itself (stderrWriter).
type hclogAdapter struct {
	log     *slog.Logger
	name    string
	offName string
	level   hclog.Level
	args    []any
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHCLog(l *slog.Logger, offName string) *hclogAdapter {
	return &hclogAdapter{log: l, offName: offName, level: hclog.Info}
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if a.level == hclog.Off || level < a.level {
		return
	}
	var sl slog.Level
	switch {
	case level <= hclog.Debug:
		sl = slog.LevelDebug
	case level == hclog.Info:
		sl = slog.LevelInfo
	case level == hclog.Warn:
		sl = slog.LevelWarn
	default:
		sl = slog.LevelError
	}
	all := append(append([]any{}, a.args...), args...)
	if a.name != "" {
		all = append(all, "component", a.name)
	}
	a.log.Log(context.Background(), sl, msg, all...)
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }
func (a *hclogAdapter) IsTrace() bool                 { return a.level != hclog.Off && a.level <= hclog.Trace }
func (a *hclogAdapter) IsDebug() bool                 { return a.level != hclog.Off && a.level <= hclog.Debug }
func (a *hclogAdapter) IsInfo() bool                  { return a.level != hclog.Off && a.level <= hclog.Info }
func (a *hclogAdapter) IsWarn() bool                  { return a.level != hclog.Off && a.level <= hclog.Warn }
func (a *hclogAdapter) IsError() bool                 { return a.level != hclog.Off && a.level <= hclog.Error }
func (a *hclogAdapter) ImpliedArgs() []any            { return a.args }
func (a *hclogAdapter) Name() string                  { return a.name }
func (a *hclogAdapter) SetLevel(l hclog.Level)        { a.level = l }
func (a *hclogAdapter) GetLevel() hclog.Level         { return a.level }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.args = append(append([]any{}, a.args...), args...)
	return &c
}

func (a *hclogAdapter) Named(name string) hclog.Logger {
	c := *a
	if name == a.offName {
		c.level = hclog.Off
	}
	if a.name != "" {
		name = a.name + "." + name
	}
	c.name = name
	return &c
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	return &c
}

func (a *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(a.log.Handler(), slog.LevelInfo)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return slog.NewLogLogger(a.log.Handler(), slog.LevelInfo).Writer()
}

// maxLogLine bounds one forwarded stderr line.
const maxLogLine = 16 << 10

// The rate of a plugin's stderr lines forwarded to the agent's log: a burst
// of logBurst lines (a panic's stack with its goroutines), then logRate a
// second. A plugin (compromised, or a C library complaining about every
// record) can write far more: the rest is counted, not logged.
const (
	logBurst = 1000
	logRate  = 100
)

// stderrWriter forwards a plugin's stderr to slog, one record per line.
// JSON lines from the SDK logger (@level, @message, fields) keep their level
// and fields; other lines (a panic's stack, a C library's complaint) are
// logged as-is, at error level from a "panic:" or "fatal error:" on. Lines
// over the rate limit (logBurst, logRate) are dropped and counted in
// dropped; the next line logged is preceded by a warning with their number.
type stderrWriter struct {
	log     *slog.Logger
	dropped *atomic.Uint64 // nil: not counted
	mu      sync.Mutex
	buf     []byte
	inPanic bool
	tokens  float64   // lines that may be logged now
	last    time.Time // when tokens was computed (zero: never)
	pending uint64    // lines dropped since the last one logged
}

// allow takes one line from the rate limit.
func (w *stderrWriter) allow() bool {
	now := time.Now()
	if w.last.IsZero() {
		w.tokens = logBurst
	} else {
		w.tokens = min(logBurst, w.tokens+now.Sub(w.last).Seconds()*logRate)
	}
	w.last = now
	if w.tokens < 1 {
		w.pending++
		if w.dropped != nil {
			w.dropped.Add(1)
		}
		return false
	}
	w.tokens--
	if w.pending > 0 {
		w.log.Warn("plugin standard error over the rate limit: lines dropped", "dropped", w.pending,
			"burst", logBurst, "per_second", logRate)
		w.pending = 0
	}
	return true
}

func (w *stderrWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLogLine - len(w.buf)
			w.buf = append(w.buf, p[:min(len(p), max(room, 0))]...)
			break
		}
		room := maxLogLine - len(w.buf)
		w.buf = append(w.buf, p[:min(i, max(room, 0))]...)
		w.line(w.buf)
		w.buf = w.buf[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (w *stderrWriter) line(b []byte) {
	if len(bytes.TrimSpace(b)) == 0 {
		return
	}
	if bytes.HasPrefix(b, []byte("panic: ")) || bytes.HasPrefix(b, []byte("fatal error: ")) || bytes.HasPrefix(b, []byte("SIGSEGV")) {
		w.inPanic = true
	}
	if !w.allow() {
		return
	}
	var m map[string]any
	if !w.inPanic && b[0] == '{' && json.Unmarshal(b, &m) == nil {
		msg, _ := m["@message"].(string)
		lvl, _ := m["@level"].(string)
		attrs := make([]any, 0, 2*len(m))
		for k, v := range m {
			if strings.HasPrefix(k, "@") {
				continue
			}
			attrs = append(attrs, slog.Any(k, v))
		}
		w.log.Log(context.Background(), levelOf(lvl), msg, attrs...)
		return
	}
	s := string(b)
	lvl := slog.LevelInfo
	if w.inPanic {
		lvl = slog.LevelError
	}
	w.log.Log(context.Background(), lvl, s, "stream", "stderr")
}

func levelOf(s string) slog.Level {
	switch strings.ToLower(s) {
	case "trace", "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}
