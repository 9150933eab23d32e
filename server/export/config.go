package export

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/vigil-edge/vigil/server/store"
)

// Config is the exporters' part of the server's config file:
//
//	forwarders:
//	  - name: siem                 # unique; names the durable cursor
//	    type: syslog               # syslog | webhook
//	    network: tls               # syslog: tls (RFC 5425) | tcp (RFC 6587 octet counting) | udp (RFC 5426)
//	    address: siem.example:6514
//	    ca_file: /etc/vigil/siem-ca.pem   # tls: roots to trust (default: the system's)
//	    format: json               # json (default) | ocsf: the MSG part / the webhook lines
//	    facility: local0
//	    min_severity: medium       # optional filter
//	    entity: acme               # optional filter
//	  - name: soar
//	    type: webhook
//	    url: https://soar.example/hooks/vigil
//	    secret_file: /etc/vigil/soar.secret   # HMAC-SHA256 of the body in X-Vigil-Signature
//	    headers: {Authorization: "env:SOAR_AUTH"}  # env:NAME reads the value from the environment
//
// Other top-level keys of the file belong to other parts of the server and
// are ignored here; unknown keys inside a forwarder are errors.
type Config struct {
	Forwarders []ForwarderConfig `yaml:"forwarders"`
}

// ForwarderConfig configures one forwarder.
type ForwarderConfig struct {
	Name        string        `yaml:"name"`
	Type        string        `yaml:"type"`   // syslog | webhook
	Format      string        `yaml:"format"` // json (default) | ocsf
	Entity      string        `yaml:"entity"`
	MinSeverity string        `yaml:"min_severity"`
	Batch       int           `yaml:"batch"`    // findings per delivery, default 200
	Interval    time.Duration `yaml:"interval"` // how often to look for new findings, default 1s
	// Start is where a forwarder without a cursor begins: "beginning"
	// (default: every stored finding) or "now" (only new ones).
	Start      string        `yaml:"start"`
	MaxBackoff time.Duration `yaml:"max_backoff"` // retry delay cap, default 1m
	Timeout    time.Duration `yaml:"timeout"`     // per delivery, default 15s

	// syslog
	Network    string `yaml:"network"` // udp | tcp | tls
	Address    string `yaml:"address"` // host:port
	CAFile     string `yaml:"ca_file"`
	ServerName string `yaml:"server_name"`
	CertFile   string `yaml:"cert_file"` // optional client certificate (mutual TLS)
	KeyFile    string `yaml:"key_file"`
	Facility   string `yaml:"facility"` // default local0
	Hostname   string `yaml:"hostname"` // default: the host's name
	AppName    string `yaml:"app_name"` // default vigil
	SDID       string `yaml:"sd_id"`    // structured data id, default vigil@32473
	MaxMessage int    `yaml:"max_message"`

	// webhook
	URL        string            `yaml:"url"`
	Headers    map[string]string `yaml:"headers"`
	SecretFile string            `yaml:"secret_file"`
}

// LoadConfig reads the forwarders of the server config file at path.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("load export config: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("load export config %s: %w", path, err)
	}
	return cfg, nil
}

// MaxConfigBytes bounds the config file.
const MaxConfigBytes = 1 << 20

// ParseConfig parses and validates the forwarders of a server config file.
// A file without a forwarders key is an empty Config. The file is one YAML
// document: another non-empty one is refused, not ignored.
func ParseConfig(b []byte) (Config, error) {
	if len(b) > MaxConfigBytes {
		return Config{}, fmt.Errorf("config larger than %d bytes", MaxConfigBytes)
	}
	// The forwarders are decoded strictly (a typo must not silently disable
	// an option); the other top-level keys land in Rest. The whole document
	// is decoded at once, so that anchors defined outside forwarders: resolve.
	var doc struct {
		Forwarders []ForwarderConfig `yaml:"forwarders"`
		Rest       map[string]any    `yaml:",inline"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("parse config: %w", err)
	}
	for {
		var extra yaml.Node
		err := dec.Decode(&extra)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Config{}, fmt.Errorf("parse config: %w", err)
		}
		if len(extra.Content) > 0 && extra.Content[0].Tag != "!!null" {
			return Config{}, fmt.Errorf("parse config: line %d: a second YAML document", extra.Content[0].Line)
		}
	}
	cfg := Config{Forwarders: doc.Forwarders}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Facilities of RFC 5424 by name.
var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8, "cron": 9,
	"authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14, "solaris-cron": 15,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

var sdNameRE = regexp.MustCompile(`^[!#-<>-\\^-~]{1,32}$`) // printable US-ASCII except = ] " and space

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	seen := map[string]bool{}
	for i := range c.Forwarders {
		f := &c.Forwarders[i]
		where := fmt.Sprintf("forwarder %d (%q)", i+1, f.Name)
		if !nameRE.MatchString(f.Name) {
			return fmt.Errorf("%s: name must match %s", where, nameRE)
		}
		if seen[f.Name] {
			return fmt.Errorf("%s: duplicate name", where)
		}
		seen[f.Name] = true
		if f.Format == "" {
			f.Format = FormatJSON
		}
		if !ValidFormat(f.Format) {
			return fmt.Errorf("%s: format %q (want json or ocsf)", where, f.Format)
		}
		if f.MinSeverity != "" {
			if _, err := store.ParseSeverity(f.MinSeverity); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
		}
		if f.Entity != "" && !nameRE.MatchString(f.Entity) {
			return fmt.Errorf("%s: invalid entity %q", where, f.Entity)
		}
		switch {
		case f.Batch == 0:
			f.Batch = 200
		case f.Batch < 1 || f.Batch > 1000:
			return fmt.Errorf("%s: batch %d out of 1..1000", where, f.Batch)
		}
		if f.Interval == 0 {
			f.Interval = time.Second
		}
		if f.MaxBackoff == 0 {
			f.MaxBackoff = time.Minute
		}
		if f.Timeout == 0 {
			f.Timeout = 15 * time.Second
		}
		if f.Interval < 10*time.Millisecond || f.MaxBackoff < 10*time.Millisecond || f.Timeout < 100*time.Millisecond {
			return fmt.Errorf("%s: interval, max_backoff or timeout too small", where)
		}
		switch f.Start {
		case "":
			f.Start = "beginning"
		case "beginning", "now":
		default:
			return fmt.Errorf("%s: start %q (want beginning or now)", where, f.Start)
		}
		switch f.Type {
		case "syslog":
			if err := f.validateSyslog(); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
		case "webhook":
			if err := f.validateWebhook(); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
		default:
			return fmt.Errorf("%s: type %q (want syslog or webhook)", where, f.Type)
		}
	}
	return nil
}

func (f *ForwarderConfig) validateSyslog() error {
	switch f.Network {
	case "udp", "tcp", "tls":
	default:
		return fmt.Errorf("network %q (want udp, tcp or tls)", f.Network)
	}
	host, port, err := net.SplitHostPort(f.Address)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("address %q: want host:port", f.Address)
	}
	if f.Network != "tls" && (f.CAFile != "" || f.CertFile != "" || f.KeyFile != "") {
		return errors.New("ca_file, cert_file and key_file need network tls")
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return errors.New("cert_file and key_file go together")
	}
	if f.Facility == "" {
		f.Facility = "local0"
	}
	if _, ok := facilities[f.Facility]; !ok {
		return fmt.Errorf("facility %q", f.Facility)
	}
	if f.AppName == "" {
		f.AppName = "vigil"
	}
	if !printASCII(f.AppName, 48) {
		return fmt.Errorf("app_name %q: 1-48 printable ASCII characters", f.AppName)
	}
	if f.Hostname != "" && !printASCII(f.Hostname, 255) {
		return fmt.Errorf("hostname %q: 1-255 printable ASCII characters", f.Hostname)
	}
	if f.SDID == "" {
		f.SDID = "vigil@32473"
	}
	if !sdNameRE.MatchString(f.SDID) {
		return fmt.Errorf("sd_id %q", f.SDID)
	}
	if f.MaxMessage == 0 {
		f.MaxMessage = 64 << 10
		if f.Network == "udp" {
			f.MaxMessage = 8 << 10
		}
	}
	if f.MaxMessage < 480 || f.MaxMessage > 1<<20 || f.Network == "udp" && f.MaxMessage > 65000 {
		return fmt.Errorf("max_message %d out of range", f.MaxMessage)
	}
	if f.URL != "" || len(f.Headers) > 0 || f.SecretFile != "" {
		return errors.New("url, headers and secret_file are webhook options")
	}
	return nil
}

func (f *ForwarderConfig) validateWebhook() error {
	u, err := url.Parse(f.URL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("url %q: want an https:// URL", redactURL(f.URL))
	}
	if u.Scheme == "http" {
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("url %q: plain http only to loopback; findings must not cross a network unencrypted", redactURL(f.URL))
		}
	}
	if u.User != nil {
		return errors.New("url: put credentials in headers (env:NAME), not in the URL")
	}
	// Go's HTTP client refuses an invalid header at every request: the
	// forwarder would start, then never deliver.
	for k, v := range f.Headers {
		env, fromEnv := strings.CutPrefix(v, "env:")
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) || fromEnv && env == "" {
			return fmt.Errorf("header %q: invalid", k)
		}
	}
	if f.Network != "" || f.Address != "" || f.Facility != "" {
		return errors.New("network, address and facility are syslog options")
	}
	return nil
}

func printASCII(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}
