package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestParseRefusesFractionalIntegers: the YAML decoder truncates a float
// into an integer field, so `batch_max: 1.5` became 1 and
// `beacon_intervals: 0.5` became 0, which is the plugin's default (20):
// a wrong value taken silently instead of refused, as JSON refuses it.
func TestParseRefusesFractionalIntegers(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"batch_max", "uplink:\n  batch_max: 1.5\n", "uplink.batch_max"},
		{"inflight", "uplink:\n  inflight: 4.9\n", "uplink.inflight"},
		{"beacon below one", "capture:\n  beacon_intervals: 0.5\n", "capture.beacon_intervals"},
		{"exponent", "capture:\n  beacon_intervals: 2e1\n", "capture.beacon_intervals"},
		{"through a merge key", "uplink:\n  <<: {batch_max: 2.5}\n", "uplink.batch_max"},
		{"through an alias", "uplink:\n  batch_max: 100\n  inflight: &n 1.5\ncapture:\n  beacon_intervals: *n\n", "uplink.inflight"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in), "yaml")
			if err == nil {
				t.Fatalf("accepted: batch_max %d inflight %d beacon_intervals %d", c.Uplink.BatchMax, c.Uplink.Inflight, c.Capture.BeaconIntervals)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v does not name %s", err, tt.want)
			}
		})
	}
	if _, err := Parse([]byte(`{"uplink":{"batch_max":1.5}}`), "json"); err == nil {
		t.Fatal("json: accepted 1.5 as an integer")
	}
	// Integers, floats where floats belong, durations and sizes still parse.
	c, err := Parse([]byte("uplink:\n  batch_max: 200\n  inflight: 0x8\ncapture:\n  beacon_intervals: -1\n"+
		"calibration:\n  quantile: 0.99\n  grace: 1.5h\ndemo:\n  rate: 2\nspool:\n  max_bytes: 2MiB\n"), "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Uplink.BatchMax != 200 || c.Uplink.Inflight != 8 || c.Capture.BeaconIntervals != -1 || c.Calibration.Quantile != 0.99 ||
		c.Demo.Rate != 2 || c.Spool.MaxBytes != 2<<20 {
		t.Fatalf("parsed %+v", c)
	}
}

// TestLoadRefusesWritableConfig: Load read a configuration file that any
// local user may write. The file chooses the directories the agent runs
// detector plugins from (plugin_dirs), the model bundles it loads and the
// trust policy it seeds: whoever can write it runs code as the agent's user
// (or as root for `vigil-agent update --config`).
func TestLoadRefusesWritableConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		mode os.FileMode
		ok   bool
	}{
		{"0644", 0o644, true},
		{"0600", 0o600, true},
		{"0640", 0o640, true},
		{"0664 group-writable", 0o664, true},
		{"0666 world-writable", 0o666, false},
		{"0602 world-writable", 0o602, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".yaml")
			if err := os.WriteFile(p, []byte("state_dir: /x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if tt.ok && err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !tt.ok && (err == nil || !strings.Contains(err.Error(), "writable")) {
				t.Fatalf("Load = %v, want a refusal naming the mode", err)
			}
		})
	}
	// Through a symbolic link, the file's own mode counts.
	target := filepath.Join(dir, "target.yaml")
	if err := os.WriteFile(target, []byte("state_dir: /x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(target, 0o666); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(link); err == nil {
		t.Fatal("a world-writable file behind a symbolic link was loaded")
	}
}

// TestValidateSearchDirsAbsolute: a relative or empty entry of plugin_dirs
// or model_dirs was searched relative to the working directory: `/` under
// systemd, but the admin's shell directory for `vigil-agent update
// --config`, where a `vigil-detector-*` file found there was executed
// (`""` is the working directory itself). update.trust_seed already had to
// be absolute.
func TestValidateSearchDirsAbsolute(t *testing.T) {
	for _, tt := range []struct {
		name            string
		plugins, models []string
		want            string
	}{
		{"absolute", []string{"/usr/lib/vigil/plugins"}, []string{"/usr/share/vigil/models"}, ""},
		{"none", nil, nil, ""},
		{"relative plugin dir", []string{"plugins"}, nil, "plugin_dirs"},
		{"empty plugin dir", []string{""}, nil, "plugin_dirs"},
		{"dot plugin dir", []string{"./lib"}, nil, "plugin_dirs"},
		{"relative model dir", nil, []string{"models"}, "model_dirs"},
		{"empty model dir", nil, []string{""}, "model_dirs"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.PluginDirs, c.ModelDirs = tt.plugins, tt.models
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

// TestLoadRefusesForeignConfig: a configuration file owned by a user other
// than root and the one running the agent could be rewritten by that user
// (see TestLoadRefusesWritableConfig). Needs root to hand the file over.
func TestLoadRefusesForeignConfig(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte("state_dir: /x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err != nil {
		t.Fatalf("root's own file: %v", err)
	}
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("Load = %v, want a refusal naming the owner", err)
	}
}

// TestShippedConfigDocumentsEveryKey: the agent.yaml the packages install
// is where admins learn the settings, but server, uplink.*, update.* and
// capture.pcaps were parsed and documented nowhere else. Every key the
// parser takes must appear in it (set, or commented out with its default),
// and every key written there, commented out or not, must be one the parser
// takes (TestShippedConfig loads the ones that are set).
func TestShippedConfigDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../installer/files/config/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The keys of the file: `key:` at the start of a line, or after `#`
	// with nothing but a value behind it (prose has more words).
	keyLine := regexp.MustCompile(`^\s*(#\s*)?([a-z_]+):(\s+[^\s#]+)?\s*$`)
	inFile := map[string]int{}
	for i, l := range strings.Split(string(data), "\n") {
		if m := keyLine.FindStringSubmatch(l); m != nil {
			inFile[m[2]] = i + 1
		}
	}
	known := map[string]bool{}
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, prefix string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			known[name] = true
			if prefix+name == "demo" {
				continue // tests and demos only (a hidden flag of run)
			}
			if _, ok := inFile[name]; !ok {
				t.Errorf("%s%s is not in the shipped agent.yaml", prefix, name)
			}
			if f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(unmarshalerType) {
				walk(f.Type, prefix+name+".")
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	for k, line := range inFile {
		if !known[k] {
			t.Errorf("line %d: %s: no such key", line, k)
		}
	}
}

// TestParseJSONRefusesDuplicateKeys: a key given twice in YAML is refused,
// but encoding/json keeps the last one silently (and matches keys without
// regard to case): in agent.json, a second "capture" object dropped the
// interfaces of the first.
func TestParseJSONRefusesDuplicateKeys(t *testing.T) {
	for _, tt := range []struct{ name, in string }{
		{"top level", `{"state_dir":"/a","state_dir":"/b"}`},
		{"object twice", `{"capture":{"interfaces":["eth0"]},"capture":{"pcaps":["a.pcap"]}}`},
		{"nested", `{"uplink":{"batch_max":10,"inflight":2,"batch_max":20}}`},
		{"other case", `{"state_dir":"/a","State_Dir":"/b"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := Parse([]byte(tt.in), "json"); err == nil || !strings.Contains(err.Error(), "twice") {
				t.Fatalf("Parse = %+v, %v; want a refusal", c, err)
			}
		})
	}
	// The same key in different objects, and in a list, is fine.
	c, err := Parse([]byte(`{"uplink":{"batch_max":10},"capture":{"interfaces":["eth0","eth1"]},"spool":{"max_bytes":"2MiB"}}`), "json")
	if err != nil || c.Uplink.BatchMax != 10 || len(c.Capture.Interfaces) != 2 {
		t.Fatalf("Parse = %+v, %v", c, err)
	}
}
