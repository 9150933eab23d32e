package config

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadYAMLAndJSON(t *testing.T) {
	dir := t.TempDir()
	y := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(y, []byte(`
state_dir: /tmp/vigil
server: vigil.example:4433
spool:
  max_bytes: 16MiB
uplink:
  status_interval: 5s
  batch_max: 200
metrics:
  listen: 127.0.0.1:9999
capture:
  interfaces: [eth0]
  pcaps: [a.pcap]
watch: [/srv]
calibration:
  grace: 10m
demo:
  rate: 50
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(y)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Spool.MaxBytes != 16<<20 || c.Uplink.StatusInterval.D() != 5*time.Second || c.Uplink.BatchMax != 200 ||
		c.Uplink.Inflight != DefaultInflight || c.Capture.Interfaces[0] != "eth0" || c.Watch[0] != "/srv" || c.Demo.Rate != 50 ||
		c.Calibration.Grace.D() != 10*time.Minute || c.Calibration.Quantile != DefaultCalibrateQuantile {
		t.Fatalf("parsed %+v", c)
	}

	j := filepath.Join(dir, "agent.json")
	if err := os.WriteFile(j, []byte(`{"state_dir":"/tmp/v","spool":{"max_bytes":2097152},"uplink":{"backoff_min":"1s","backoff_max":"1m"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Load(j)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Spool.MaxBytes != 2<<20 || c.Uplink.BackoffMin.D() != time.Second || c.Metrics.Listen != DefaultMetricsListen {
		t.Fatalf("parsed %+v", c)
	}

	empty := filepath.Join(dir, "empty.yaml")
	_ = os.WriteFile(empty, nil, 0o600)
	if c, err = Load(empty); err != nil || c.Validate() != nil {
		t.Fatalf("empty file: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file loaded")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, format, in string }{
		{"unknown yaml field", "yaml", "nope: 1\n"},
		{"unknown json field", "json", `{"nope":1}`},
		{"bad duration", "yaml", "uplink:\n  status_interval: ten\n"},
		{"bad size", "yaml", "spool:\n  max_bytes: lots\n"},
		{"negative size", "json", `{"spool":{"max_bytes":-1}}`},
		{"trailing json", "json", `{} {}`},
		{"bad format", "toml", ``},
		{"list as size", "yaml", "spool:\n  max_bytes: [1]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.in), tt.format); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"metrics off", func(c *Config) { c.Metrics.Listen = "off" }, ""},
		{"metrics public", func(c *Config) { c.Metrics.Listen = "0.0.0.0:9464" }, "loopback"},
		{"metrics localhost", func(c *Config) { c.Metrics.Listen = "localhost:9464" }, ""},
		{"small spool", func(c *Config) { c.Spool.MaxBytes = 100 }, "max_bytes"},
		{"bad server", func(c *Config) { c.Server = "nohost" }, "server"},
		{"status too fast", func(c *Config) { c.Uplink.StatusInterval = Duration(time.Millisecond) }, "status_interval"},
		{"batch", func(c *Config) { c.Uplink.BatchMax = 100000 }, "batch_max"},
		{"inflight", func(c *Config) { c.Uplink.Inflight = -1 }, "inflight"},
		{"backoff order", func(c *Config) { c.Uplink.BackoffMax = Duration(time.Millisecond) }, "backoff"},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, "log.format"},
		{"empty iface", func(c *Config) { c.Capture.Interfaces = []string{""} }, "empty"},
		{"demo rate", func(c *Config) { c.Demo.Rate = -1 }, "demo.rate"},
		{"no state", func(c *Config) { c.StateDir = "" }, "state_dir"},
		{"calibrate", func(c *Config) { c.Calibration.Grace = Duration(10 * time.Minute); c.Calibration.Quantile = 0.99 }, ""},
		{"calibrate negative", func(c *Config) { c.Calibration.Grace = Duration(-time.Second) }, "calibration.grace"},
		{"calibrate too long", func(c *Config) { c.Calibration.Grace = Duration(MaxCalibrate + time.Second) }, "calibration.grace"},
		{"calibrate quantile 1", func(c *Config) { c.Calibration.Quantile = 1 }, "calibration.quantile"},
		{"calibrate quantile low", func(c *Config) { c.Calibration.Quantile = 0.2 }, "calibration.quantile"},
		{"calibrate quantile NaN", func(c *Config) { c.Calibration.Quantile = math.NaN() }, "calibration.quantile"},
		{"trust seed relative", func(c *Config) { c.Update.TrustSeed = "trust.json" }, "update.trust_seed"},
		{"trust seed elsewhere", func(c *Config) { c.Update.TrustSeed = "/srv/vigil/trust.json" }, ""},
		{"beacon off", func(c *Config) { c.Capture.BeaconIntervals = -1 }, ""},
		{"beacon 5", func(c *Config) { c.Capture.BeaconIntervals = 5 }, ""},
		{"beacon 31", func(c *Config) { c.Capture.BeaconIntervals = 31 }, ""},
		{"beacon 4", func(c *Config) { c.Capture.BeaconIntervals = 4 }, "capture.beacon_intervals"},
		{"beacon 32", func(c *Config) { c.Capture.BeaconIntervals = 32 }, "capture.beacon_intervals"},
		{"beacon -2", func(c *Config) { c.Capture.BeaconIntervals = -2 }, "capture.beacon_intervals"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"4096", 4096, true}, {"64MiB", 64 << 20, true}, {"1 GiB", 1 << 30, true}, {"10KB", 10000, true},
		{"12B", 12, true}, {"", 0, false}, {"-1", 0, false}, {"1TiB", 0, false}, {"99999999999GiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzConfigLoad(f *testing.F) {
	f.Add([]byte("state_dir: /x\nspool:\n  max_bytes: 64MiB\n"), false)
	f.Add([]byte(`{"uplink":{"status_interval":"5s","batch_max":10}}`), true)
	f.Add([]byte("uplink: {backoff_min: 1s}\n"), false)
	f.Add([]byte("&a [*a]"), false)
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		format := "yaml"
		if isJSON {
			format = "json"
		}
		c, err := Parse(data, format)
		if err != nil {
			return
		}
		_ = c.Validate() // must not panic
	})
}

// TestShippedConfig: the agent.yaml the packages install loads and
// validates (with calibration off, as shipped).
func TestShippedConfig(t *testing.T) {
	c, err := Load("../../installer/files/config/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/var/lib/vigil" || c.Calibration.Grace != 0 || c.Calibration.Quantile != 0.999 {
		t.Fatalf("shipped config: %+v", c)
	}
}
