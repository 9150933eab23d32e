// Package config is the typed configuration of `vigil-agent run`: parsed
// from a YAML or JSON file (Load / Parse), completed with defaults and
// checked (Validate). Command-line flags are applied by the caller between
// Load and Validate.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vigil-edge/vigil/internal/fsutil"
)

// maxFile bounds a configuration file.
const maxFile = 1 << 20

// Config is the agent's configuration.
type Config struct {
	// StateDir holds identity, key, certificates and the spool.
	StateDir string `json:"state_dir" yaml:"state_dir"`
	// Server overrides the server address from identity.json (HOST:PORT).
	Server string `json:"server,omitempty" yaml:"server,omitempty"`

	Spool   Spool    `json:"spool" yaml:"spool"`
	Uplink  Uplink   `json:"uplink" yaml:"uplink"`
	Metrics Metrics  `json:"metrics" yaml:"metrics"`
	Log     Log      `json:"log" yaml:"log"`
	Capture Capture  `json:"capture" yaml:"capture"`
	Watch   []string `json:"watch,omitempty" yaml:"watch,omitempty"`
	// Calibration is per-sensor calibration (off by default).
	Calibration Calibration `json:"calibration" yaml:"calibration"`
	// PluginDirs and ModelDirs are searched for detector plugins and model
	// bundles after the directory of the vigil-agent binary (packages:
	// /usr/lib/vigil/plugins, /usr/share/vigil/models).
	PluginDirs []string `json:"plugin_dirs,omitempty" yaml:"plugin_dirs,omitempty"`
	ModelDirs  []string `json:"model_dirs,omitempty" yaml:"model_dirs,omitempty"`
	Demo       Demo     `json:"demo" yaml:"demo"`
	Update     Update   `json:"update" yaml:"update"`
}

// Update configures the model updater.
type Update struct {
	// ShadowReportInterval is how often the statistics of a shadow model
	// (and of the active model beside it) are reported to the server.
	ShadowReportInterval Duration `json:"shadow_report_interval" yaml:"shadow_report_interval"`
	// TrustSeed is the shipped trust policy of the release keys (the
	// packages' /etc/vigil/trust.json): the agent copies it to
	// <state_dir>/trust.json when that is absent, and from then on keeps
	// its own copy there, which signed policy updates rotate
	// (`vigil-agent update --trust`). Default DefaultTrustSeed; a path
	// that does not exist seeds nothing.
	TrustSeed string `json:"trust_seed,omitempty" yaml:"trust_seed,omitempty"`
}

// DefaultTrustSeed is where the packages install the trust policy.
const DefaultTrustSeed = "/etc/vigil/trust.json"

// Spool configures the findings spool.
type Spool struct {
	MaxBytes ByteSize `json:"max_bytes" yaml:"max_bytes"`
}

// Uplink configures the connection to the server.
type Uplink struct {
	StatusInterval Duration `json:"status_interval" yaml:"status_interval"`
	BatchMax       int      `json:"batch_max" yaml:"batch_max"`
	Inflight       int      `json:"inflight" yaml:"inflight"`
	BackoffMin     Duration `json:"backoff_min" yaml:"backoff_min"`
	BackoffMax     Duration `json:"backoff_max" yaml:"backoff_max"`
}

// Metrics configures the Prometheus listener.
type Metrics struct {
	// Listen is a localhost address; "off" disables the listener.
	Listen string `json:"listen" yaml:"listen"`
}

// Log configures logging.
type Log struct {
	Level  string `json:"level" yaml:"level"`   // debug, info, warn, error
	Format string `json:"format" yaml:"format"` // auto, text, json
}

// Capture names the packet sources.
type Capture struct {
	Interfaces []string `json:"interfaces,omitempty" yaml:"interfaces,omitempty"`
	Pcaps      []string `json:"pcaps,omitempty" yaml:"pcaps,omitempty"`
	// BeaconIntervals tunes the netflow plugin's beacon rule (periodic
	// connections to one address and port, plugins/netflow beacon.go): the
	// regular intervals it needs before it flags a connection, between
	// MinBeaconIntervals and MaxBeaconIntervals; 0: the plugin's default
	// (20); -1: no beacon rule.
	BeaconIntervals int `json:"beacon_intervals,omitempty" yaml:"beacon_intervals,omitempty"`
}

// The range of capture.beacon_intervals (the plugin keeps 32 connection
// starts per pair: 31 intervals).
const (
	MinBeaconIntervals = 5
	MaxBeaconIntervals = 31
)

// Calibration configures per-sensor calibration of the detectors (packets
// and file activity alike).
type Calibration struct {
	// Grace is the calibration grace period (event time): each detector
	// observes local events this long without findings, then raises its
	// models' thresholds to the local Quantile score quantile where that is
	// higher, and the agent reports the result to the server. 0 (the
	// default) uses the models' thresholds as they are.
	Grace Duration `json:"grace,omitempty" yaml:"grace,omitempty"`
	// Quantile is that quantile (default 0.999).
	Quantile float64 `json:"quantile,omitempty" yaml:"quantile,omitempty"`
}

// Demo configures the synthetic findings generator (tests and demos only).
type Demo struct {
	// Rate is findings per second; 0 disables the generator.
	Rate float64 `json:"rate" yaml:"rate"`
}

// Defaults.
const (
	DefaultStateDir       = "/var/lib/vigil"
	DefaultMaxBytes       = 64 << 20
	DefaultStatusInterval = 10 * time.Second
	DefaultBatchMax       = 1000
	DefaultInflight       = 4
	DefaultBackoffMin     = 200 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	DefaultMetricsListen  = "127.0.0.1:9464"
	// DefaultShadowReportInterval: shadow statistics reach the server once a minute.
	DefaultShadowReportInterval = time.Minute
	// DefaultCalibrateQuantile is the local score quantile of per-sensor calibration.
	DefaultCalibrateQuantile = 0.999
	// MaxCalibrate bounds the calibration grace period.
	MaxCalibrate = 7 * 24 * time.Hour
)

// Default returns a configuration with every default filled in.
func Default() *Config {
	c := &Config{}
	c.SetDefaults()
	return c
}

// SetDefaults fills zero fields with defaults.
func (c *Config) SetDefaults() {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.Spool.MaxBytes == 0 {
		c.Spool.MaxBytes = DefaultMaxBytes
	}
	if c.Uplink.StatusInterval == 0 {
		c.Uplink.StatusInterval = Duration(DefaultStatusInterval)
	}
	if c.Uplink.BatchMax == 0 {
		c.Uplink.BatchMax = DefaultBatchMax
	}
	if c.Uplink.Inflight == 0 {
		c.Uplink.Inflight = DefaultInflight
	}
	if c.Uplink.BackoffMin == 0 {
		c.Uplink.BackoffMin = Duration(DefaultBackoffMin)
	}
	if c.Uplink.BackoffMax == 0 {
		c.Uplink.BackoffMax = Duration(DefaultBackoffMax)
	}
	if c.Update.TrustSeed == "" {
		c.Update.TrustSeed = DefaultTrustSeed
	}
	if c.Metrics.Listen == "" {
		c.Metrics.Listen = DefaultMetricsListen
	}
	if c.Update.ShadowReportInterval == 0 {
		c.Update.ShadowReportInterval = Duration(DefaultShadowReportInterval)
	}
	if c.Calibration.Quantile == 0 {
		c.Calibration.Quantile = DefaultCalibrateQuantile
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "auto"
	}
}

// Load reads a configuration file (".json" is parsed as JSON, anything else
// as YAML) and fills in defaults. It does not validate: apply flags, then
// call Validate. It refuses a file that others may write, or that a user
// other than root and the caller owns: the file chooses the plugins the
// agent runs and the models and trust policy it loads. Only a regular file
// is read (a symbolic link to one is followed; the checks apply to the file
// opened, by fstat): it is opened with O_NONBLOCK, so a named pipe does not
// hold the open, waiting for a writer, before it can be refused.
func Load(path string) (*Config, error) {
	f, fi, err := fsutil.OpenRegular(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	defer f.Close()
	if err := checkOwner(fi); err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(&limitReader{r: f, n: maxFile + 1}); err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	format := "yaml"
	if strings.EqualFold(filepath.Ext(path), ".json") {
		format = "json"
	}
	c, err := Parse(buf.Bytes(), format)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	return c, nil
}

// checkOwner refuses a file writable by others, or owned by a user other
// than root and the effective user.
func checkOwner(fi os.FileInfo) error {
	if fi.Mode().Perm()&0o002 != 0 {
		return fmt.Errorf("mode %04o: writable by any user (chmod o-w)", fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("owned by uid %d, not by root or by this process's user (uid %d)", st.Uid, os.Geteuid())
	}
	return nil
}

type limitReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("file too large")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// Parse decodes a configuration ("json" or "yaml"), rejecting unknown
// fields and anything after the one document, and fills in defaults.
func Parse(data []byte, format string) (*Config, error) {
	if len(data) > maxFile {
		return nil, fmt.Errorf("parse config: %d bytes, limit %d", len(data), maxFile)
	}
	c := &Config{}
	switch format {
	case "json":
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(c); err != nil {
			return nil, fmt.Errorf("parse config: %w", err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, errors.New("parse config: trailing data after the JSON document")
		}
		// encoding/json keeps the last of a key given twice (and matches
		// keys regardless of case): refuse it, as YAML does.
		if err := checkJSONKeys(data); err != nil {
			return nil, fmt.Errorf("parse config: %w", err)
		}
	case "yaml":
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("parse config: %w", err)
		}
		// The decoder truncates a float into an integer field (batch_max:
		// 1.5 is 1, beacon_intervals: 0.5 the default): refuse it, as JSON
		// does.
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("parse config: %w", err)
		}
		if err := checkIntegers(&doc, reflect.TypeFor[Config](), ""); err != nil {
			return nil, fmt.Errorf("parse config: %w", err)
		}
		// Only the first document is decoded: refuse another one (empty ones
		// aside) rather than ignore its settings.
		for {
			var extra yaml.Node
			err := dec.Decode(&extra)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("parse config: %w", err)
			}
			if len(extra.Content) > 0 && extra.Content[0].Tag != "!!null" {
				return nil, fmt.Errorf("parse config: line %d: a second YAML document", extra.Content[0].Line)
			}
		}
	default:
		return nil, fmt.Errorf("parse config: unknown format %q", format)
	}
	c.SetDefaults()
	return c, nil
}

// checkJSONKeys refuses an object that names a key twice (compared
// without regard to case, as encoding/json matches fields).
func checkJSONKeys(data []byte) error {
	type frame struct {
		keys    map[string]bool // nil: an array
		wantKey bool
	}
	var open []*frame
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(open) > 0 {
			top = open[len(open)-1]
		}
		if k, ok := tok.(string); ok && top != nil && top.wantKey {
			if top.keys[strings.ToLower(k)] {
				return fmt.Errorf("key %q given twice in one object", k)
			}
			top.keys[strings.ToLower(k)], top.wantKey = true, false
			continue
		}
		switch tok {
		case json.Delim('{'):
			open = append(open, &frame{keys: map[string]bool{}, wantKey: true})
			continue
		case json.Delim('['):
			open = append(open, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			open = open[:len(open)-1]
			if top = nil; len(open) > 0 {
				top = open[len(open)-1]
			}
		}
		// A value ended: its object wants a key next.
		if top != nil && top.keys != nil {
			top.wantKey = true
		}
	}
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// checkIntegers refuses a float scalar where n, decoded into a value of type
// t, meets an integer field (types with their own UnmarshalYAML aside).
func checkIntegers(n *yaml.Node, t reflect.Type, name string) error {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			if err := checkIntegers(c, t, name); err != nil {
				return err
			}
		}
		return nil
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" {
			return fmt.Errorf("line %d: %s: %q is not an integer", n.Line, name, n.Value)
		}
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for _, c := range n.Content {
				if err := checkIntegers(c, t.Elem(), name); err != nil {
					return err
				}
			}
		}
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.ShortTag() == "!!merge" {
				// A merge key's value is a mapping or a list of them, merged
				// into this one.
				if err := checkIntegers(v, reflect.SliceOf(t), name); err != nil {
					return err
				}
				if err := checkIntegers(v, t, name); err != nil {
					return err
				}
				continue
			}
			for j := 0; j < t.NumField(); j++ {
				if tag, _, _ := strings.Cut(t.Field(j).Tag.Get("yaml"), ","); tag == k.Value {
					if err := checkIntegers(v, t.Field(j).Type, strings.TrimPrefix(name+"."+tag, ".")); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir is empty"))
	}
	if c.Server != "" {
		if err := checkHostPort(c.Server); err != nil {
			errs = append(errs, fmt.Errorf("server: %w", err))
		}
	}
	if c.Spool.MaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("spool.max_bytes %d: at least 1MiB", c.Spool.MaxBytes))
	}
	if d := c.Uplink.StatusInterval.D(); d < time.Second || d > time.Hour {
		errs = append(errs, fmt.Errorf("uplink.status_interval %s: between 1s and 1h", d))
	}
	if d := c.Update.ShadowReportInterval.D(); d < time.Second || d > time.Hour {
		errs = append(errs, fmt.Errorf("update.shadow_report_interval %s: between 1s and 1h", d))
	}
	if c.Uplink.BatchMax < 1 || c.Uplink.BatchMax > 10000 {
		errs = append(errs, fmt.Errorf("uplink.batch_max %d: between 1 and 10000", c.Uplink.BatchMax))
	}
	if c.Uplink.Inflight < 1 || c.Uplink.Inflight > 64 {
		errs = append(errs, fmt.Errorf("uplink.inflight %d: between 1 and 64", c.Uplink.Inflight))
	}
	if c.Uplink.BackoffMin.D() <= 0 || c.Uplink.BackoffMax.D() < c.Uplink.BackoffMin.D() {
		errs = append(errs, fmt.Errorf("uplink.backoff_min %s / backoff_max %s: need 0 < min <= max",
			c.Uplink.BackoffMin.D(), c.Uplink.BackoffMax.D()))
	}
	if c.Metrics.Listen != "off" {
		if err := checkLocalListen(c.Metrics.Listen); err != nil {
			errs = append(errs, fmt.Errorf("metrics.listen: %w", err))
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "auto", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: want auto, text or json", c.Log.Format))
	}
	for _, s := range append(append([]string{}, c.Capture.Interfaces...), append(c.Capture.Pcaps, c.Watch...)...) {
		if s == "" {
			errs = append(errs, errors.New("empty interface, pcap or watch entry"))
		}
	}
	// A source named twice (in the file, or in the file and again by a
	// flag, which adds to it) would be read twice: every packet scored
	// twice, doubling the counts and rates the models see.
	for _, l := range []struct {
		name  string
		items []string
		key   func(string) string
	}{
		{"capture.interfaces", c.Capture.Interfaces, func(s string) string { return s }},
		{"capture.pcaps", c.Capture.Pcaps, filepath.Clean},
	} {
		seen := map[string]bool{}
		for _, s := range l.items {
			if k := l.key(s); s != "" && seen[k] {
				errs = append(errs, fmt.Errorf("%s: %q is named twice", l.name, s))
			} else {
				seen[k] = true
			}
		}
	}
	// Relative directories would be searched from the working directory:
	// `/` under systemd, the admin's shell for `vigil-agent update`.
	for _, l := range []struct {
		name string
		dirs []string
	}{{"plugin_dirs", c.PluginDirs}, {"model_dirs", c.ModelDirs}} {
		for _, d := range l.dirs {
			if !filepath.IsAbs(d) {
				errs = append(errs, fmt.Errorf("%s %q: an absolute path", l.name, d))
			}
		}
	}
	if t := c.Update.TrustSeed; t != "" && !filepath.IsAbs(t) {
		errs = append(errs, fmt.Errorf("update.trust_seed %q: an absolute path", t))
	}
	if b := c.Capture.BeaconIntervals; b != 0 && b != -1 && (b < MinBeaconIntervals || b > MaxBeaconIntervals) {
		errs = append(errs, fmt.Errorf("capture.beacon_intervals %d: 0 (default), -1 (off), or %d to %d", b, MinBeaconIntervals, MaxBeaconIntervals))
	}
	if d := c.Calibration.Grace.D(); d < 0 || d > MaxCalibrate {
		errs = append(errs, fmt.Errorf("calibration.grace %s: between 0 and %s", d, MaxCalibrate))
	}
	if q := c.Calibration.Quantile; !(q >= 0.5 && q < 1) {
		errs = append(errs, fmt.Errorf("calibration.quantile %v: at least 0.5 and below 1", q))
	}
	if c.Demo.Rate < 0 || c.Demo.Rate > 1e6 || c.Demo.Rate != c.Demo.Rate {
		errs = append(errs, fmt.Errorf("demo.rate %v: between 0 and 1e6", c.Demo.Rate))
	}
	return errors.Join(errs...)
}

// checkHostPort requires HOST:PORT with a host and a port from 1 to 65535
// (what the uplink can dial).
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || strings.ContainsAny(host, " /@\x00") {
		return fmt.Errorf("%q: want HOST:PORT", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: port must be 1-65535", addr)
	}
	return nil
}

// checkLocalListen requires a loopback address: the metrics are for the host.
func checkLocalListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: bad port", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: must be a loopback address", addr)
	}
	return nil
}

// Duration is a time.Duration written as "10s" in files (or nanoseconds as a
// JSON number).
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalJSON accepts "10s" or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("duration: %w", err)
		}
		return d.UnmarshalText([]byte(s))
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(n)
	return nil
}

// UnmarshalYAML accepts "10s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: duration must be a scalar", n.Line)
	}
	if err := d.UnmarshalText([]byte(n.Value)); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

// ByteSize is a size in bytes written as a number or with a unit: "64MiB",
// "512KiB", "1GiB", "100MB", "4096".
type ByteSize int64

// ParseByteSize parses a size.
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
	}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("byte size %q: want a non-negative integer with an optional unit (KiB, MiB, GiB, KB, MB, GB)", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("byte size %q: too large", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(t []byte) error {
	v, err := ParseByteSize(string(t))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalJSON accepts a number or a string with a unit.
func (b *ByteSize) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return fmt.Errorf("byte size: %w", err)
		}
		return b.UnmarshalText([]byte(s))
	}
	return b.UnmarshalText(data)
}

// UnmarshalYAML accepts a number or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: byte size must be a scalar", n.Line)
	}
	if err := b.UnmarshalText([]byte(n.Value)); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}
