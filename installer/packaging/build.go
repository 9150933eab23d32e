// Package packaging builds Vigil's release artifacts from a bin/ directory
// (the output of `make build`): the vigil-agent and vigil-server packages as
// .deb and .rpm (with nfpm, as a library), the offline bundle
// vigil-agent-<version>-linux-<arch>.tar.gz, a SHA256SUMS file over all of
// them, and SHA256SUMS.sig when a release key is given.
//
// The files that go into the packages (units, sysctl drop-in, default
// configuration, maintainer scripts, install.sh) are embedded by package
// installer. Layout on the target:
//
//	/usr/bin/vigil-agent, /usr/bin/vigil-server, /usr/bin/vigilctl
//	/usr/lib/vigil/plugins/vigil-detector-*   detector plugins
//	/usr/lib/vigil/lib/libonnxruntime.so      found by the plugins as ../lib
//	/usr/share/vigil/models/*.vgb             baseline bundles
//	/etc/vigil/agent.yaml, trust.json         conffiles
//	/etc/vigil/server.env                     conffile
//	/lib/systemd/system/*.service, *.timer    (rpm: /usr/lib/systemd/system)
//	/usr/lib/sysctl.d/60-vigil.conf
//	/var/lib/vigil, /var/lib/vigil-server     state (not in the packages)
package packaging

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager

	"github.com/vigil-edge/vigil/installer"
	"github.com/vigil-edge/vigil/models/trust"
)

// Formats the builder produces.
const (
	FormatDeb = "deb"
	FormatRPM = "rpm"
	FormatTar = "tar" // the offline bundle
)

// DefaultMaintainer is the packages' Maintainer field.
const DefaultMaintainer = "Vigil maintainers <vigil@vigil-edge.org>"

// Options configures Build.
type Options struct {
	BinDir  string // bin/ of `make build`
	OutDir  string // created; existing artifacts of the same names are replaced
	Version string // deb/rpm version (see VersionFromDescribe, ValidateVersion)
	// TrustPolicy is the trust.json of the release keys that sign model
	// bundles, installed as /etc/vigil/trust.json. Empty: none is shipped
	// (the agent then accepts no model update until one is installed).
	TrustPolicy string
	// SigningKey, when set, signs SHA256SUMS (see SignFile).
	SigningKey *ecdsa.PrivateKey
	Arch       string    // Debian/Go architecture name; default "amd64"
	Maintainer string    // default DefaultMaintainer
	MTime      time.Time // modification time of every file; default now
	Formats    []string  // default deb, rpm, tar
	// FastCompression trades size for speed (gzip level 1), for tests.
	FastCompression bool
	Log             *slog.Logger
}

// Result lists what Build wrote.
type Result struct {
	Artifacts []string // paths of the packages and the bundle, in OutDir
	Checksums string   // path of SHA256SUMS
	Signature string   // path of SHA256SUMS.sig, "" when unsigned
}

// entry is one file of a package.
type entry struct {
	src, dst string
	mode     os.FileMode
	typ      string // files.TypeFile, TypeConfigNoReplace, TypeDir
	packager string // "" for all, or FormatDeb / FormatRPM / FormatTar
}

// inputs are the files found in BinDir.
type inputs struct {
	agent, server, ctl, ortLib string
	plugins, models            []string
}

func findInputs(bin string) (*inputs, error) {
	in := &inputs{
		agent:  filepath.Join(bin, "vigil-agent"),
		server: filepath.Join(bin, "vigil-server"),
		ctl:    filepath.Join(bin, "vigilctl"),
		ortLib: filepath.Join(bin, "lib", "libonnxruntime.so"),
	}
	var errs []error
	for _, p := range []string{in.agent, in.server, in.ctl} {
		if err := isExecutable(p); err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	if in.plugins, err = filepath.Glob(filepath.Join(bin, "vigil-detector-*")); err != nil {
		errs = append(errs, err)
	}
	// Skip the SDK's example detector: it is a test fixture.
	kept := in.plugins[:0]
	for _, p := range in.plugins {
		if filepath.Base(p) != "vigil-detector-example" {
			if err := isExecutable(p); err != nil {
				errs = append(errs, err)
			}
			kept = append(kept, p)
		}
	}
	in.plugins = kept
	if len(in.plugins) > 0 {
		if st, err := os.Stat(in.ortLib); err != nil || !st.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("%s: the detector plugins need it (make build installs it)", in.ortLib))
		}
	} else {
		in.ortLib = ""
	}
	if in.models, err = filepath.Glob(filepath.Join(bin, "models", "*.vgb")); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("inputs in %s: %w", bin, err)
	}
	return in, nil
}

func isExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s: not an executable file", p)
	}
	return nil
}

// Build writes the packages, the bundle and the checksums into OutDir.
func Build(ctx context.Context, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	if o.Maintainer == "" {
		o.Maintainer = DefaultMaintainer
	}
	if o.MTime.IsZero() {
		o.MTime = time.Now().UTC().Truncate(time.Second)
	}
	if len(o.Formats) == 0 {
		o.Formats = []string{FormatDeb, FormatRPM, FormatTar}
	}
	for _, f := range o.Formats {
		if f != FormatDeb && f != FormatRPM && f != FormatTar {
			return nil, fmt.Errorf("build: unknown format %q (want deb, rpm, tar)", f)
		}
	}
	if err := ValidateVersion(o.Version); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	in, err := findInputs(o.BinDir)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if o.TrustPolicy != "" {
		if _, err := trust.Load(o.TrustPolicy); err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
	} else {
		o.Log.Warn("no trust policy: the agent package ships no /etc/vigil/trust.json and will refuse every model update until one is installed")
	}
	if len(in.plugins) == 0 {
		o.Log.Warn("no detector plugins in the bin directory", "dir", o.BinDir)
	}
	if len(in.models) == 0 {
		o.Log.Warn("no baseline model bundles", "dir", filepath.Join(o.BinDir, "models"))
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	stage, err := os.MkdirTemp("", "vigil-package-")
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	defer os.RemoveAll(stage)
	if err := installer.WriteTo(stage); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	readme := filepath.Join(stage, "README.md")
	if err := os.WriteFile(readme, installer.README(), 0o644); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	res := &Result{}
	for _, spec := range []*pkgSpec{agentSpec(&o, in, stage), serverSpec(&o, in, stage)} {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for _, format := range []string{FormatDeb, FormatRPM} {
			if !contains(o.Formats, format) {
				continue
			}
			p, err := writePackage(&o, spec, format, stage)
			if err != nil {
				return nil, fmt.Errorf("build: %w", err)
			}
			o.Log.Info("package written", "file", p)
			res.Artifacts = append(res.Artifacts, p)
		}
	}
	if contains(o.Formats, FormatTar) {
		p, err := writeBundle(&o, agentSpec(&o, in, stage), stage)
		if err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
		o.Log.Info("offline bundle written", "file", p)
		res.Artifacts = append(res.Artifacts, p)
	}
	names := make([]string, len(res.Artifacts))
	for i, a := range res.Artifacts {
		names[i] = filepath.Base(a)
	}
	if err := WriteChecksums(o.OutDir, names); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	res.Checksums = filepath.Join(o.OutDir, ChecksumsFile)
	_ = os.Remove(res.Checksums + ".sig")
	if o.SigningKey != nil {
		if err := SignFile(o.SigningKey, res.Checksums); err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
		res.Signature = res.Checksums + ".sig"
	}
	return res, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// pkgSpec describes one package independently of its format.
type pkgSpec struct {
	name, description string
	entries           []entry
	debScripts        nfpm.Scripts
	rpmScripts        nfpm.Scripts
	debDepends        []string
	debRecommends     []string
	debSuggests       []string
	rpmDepends        []string
}

func unitEntries(stage, unit string) []entry {
	src := filepath.Join(stage, "systemd", unit)
	return []entry{
		{src: src, dst: "/lib/systemd/system/" + unit, mode: 0o644, packager: FormatDeb},
		{src: src, dst: "/usr/lib/systemd/system/" + unit, mode: 0o644, packager: FormatRPM},
		{src: src, dst: "/etc/systemd/system/" + unit, mode: 0o644, packager: FormatTar},
	}
}

func docEntries(stage, pkg string) []entry {
	doc := "/usr/share/doc/" + pkg + "/"
	return []entry{
		{src: filepath.Join(stage, "doc", "copyright"), dst: doc + "copyright", mode: 0o644},
		{src: filepath.Join(stage, "README.md"), dst: doc + "README.md", mode: 0o644},
		{src: filepath.Join(stage, "doc", pkg+".changelog.gz"), dst: doc + "changelog.gz", mode: 0o644, packager: FormatDeb},
		{src: filepath.Join(stage, "lintian", pkg), dst: "/usr/share/lintian/overrides/" + pkg, mode: 0o644, packager: FormatDeb},
	}
}

// scripts names the maintainer scripts of one package; a script that
// installer/files/scripts does not hold is left out.
func scripts(stage, format, prefix string) nfpm.Scripts {
	p := func(n string) string {
		f := filepath.Join(stage, "scripts", format, prefix+"-"+n)
		if _, err := os.Stat(f); err != nil {
			return ""
		}
		return f
	}
	if format == FormatDeb {
		return nfpm.Scripts{PreInstall: p("preinst"), PostInstall: p("postinst"), PreRemove: p("prerm"), PostRemove: p("postrm")}
	}
	return nfpm.Scripts{PreInstall: p("pre"), PostInstall: p("post"), PreRemove: p("preun"), PostRemove: p("postun")}
}

func agentSpec(o *Options, in *inputs, stage string) *pkgSpec {
	s := &pkgSpec{
		name: "vigil-agent",
		description: "Vigil edge agent: network and file anomaly detection sensor\n" +
			"Captures packets (AF_PACKET) and file activity, scores them with\n" +
			"detector plugins (autoencoders on ONNX Runtime), spools the findings\n" +
			"and ships them to the CERT's Vigil server over QUIC with mutual TLS.",
		debScripts:    scripts(stage, FormatDeb, "agent"),
		rpmScripts:    scripts(stage, FormatRPM, "agent"),
		debDepends:    []string{"adduser", "libc6", "libgcc-s1", "libstdc++6"},
		debRecommends: []string{"procps"},
		debSuggests:   []string{"tcpdump"},
		rpmDepends:    []string{"shadow-utils", "util-linux", "glibc", "libstdc++"},
	}
	s.entries = append(s.entries,
		entry{src: in.agent, dst: "/usr/bin/vigil-agent", mode: 0o755},
		entry{dst: "/etc/vigil", mode: 0o755, typ: files.TypeDir},
		entry{dst: "/usr/lib/vigil", mode: 0o755, typ: files.TypeDir},
		entry{dst: "/usr/lib/vigil/plugins", mode: 0o755, typ: files.TypeDir},
		entry{dst: "/usr/lib/vigil/lib", mode: 0o755, typ: files.TypeDir},
		entry{dst: "/usr/share/vigil", mode: 0o755, typ: files.TypeDir},
		entry{dst: "/usr/share/vigil/models", mode: 0o755, typ: files.TypeDir},
		entry{src: filepath.Join(stage, "config", "agent.yaml"), dst: "/etc/vigil/agent.yaml", mode: 0o644, typ: files.TypeConfigNoReplace},
		entry{src: filepath.Join(stage, "sysctl", "60-vigil.conf"), dst: "/usr/lib/sysctl.d/60-vigil.conf", mode: 0o644},
	)
	for _, p := range in.plugins {
		s.entries = append(s.entries, entry{src: p, dst: "/usr/lib/vigil/plugins/" + filepath.Base(p), mode: 0o755})
	}
	if in.ortLib != "" {
		s.entries = append(s.entries, entry{src: in.ortLib, dst: "/usr/lib/vigil/lib/libonnxruntime.so", mode: 0o644})
	}
	for _, m := range in.models {
		s.entries = append(s.entries, entry{src: m, dst: "/usr/share/vigil/models/" + filepath.Base(m), mode: 0o644})
	}
	if o.TrustPolicy != "" {
		s.entries = append(s.entries, entry{src: o.TrustPolicy, dst: "/etc/vigil/" + trust.FileName, mode: 0o644, typ: files.TypeConfigNoReplace})
	}
	s.entries = append(s.entries, unitEntries(stage, "vigil-agent.service")...)
	s.entries = append(s.entries, docEntries(stage, s.name)...)
	return s
}

// serverBackupUnits are the server package's backup timer and the service
// it starts.
var serverBackupUnits = []string{"vigil-server-backup.service", "vigil-server-backup.timer"}

func serverSpec(_ *Options, in *inputs, stage string) *pkgSpec {
	s := &pkgSpec{
		name: "vigil-server",
		description: "Vigil server: agents endpoint, findings store and API\n" +
			"The CERT side of Vigil: the QUIC endpoint for enrolled agents, the\n" +
			"findings store (SQLite), model rollout, the HTTPS API and console,\n" +
			"and vigilctl, the command line for admins and analysts.",
		debScripts: scripts(stage, FormatDeb, "server"),
		rpmScripts: scripts(stage, FormatRPM, "server"),
		debDepends: []string{"adduser", "libc6"}, // vigilctl: cgo (dlopens ONNX Runtime for model train/eval)
		rpmDepends: []string{"shadow-utils", "glibc"},
	}
	s.entries = append(s.entries,
		entry{src: in.server, dst: "/usr/bin/vigil-server", mode: 0o755},
		entry{src: in.ctl, dst: "/usr/bin/vigilctl", mode: 0o755},
		entry{dst: "/etc/vigil", mode: 0o755, typ: files.TypeDir},
		// The unit's EnvironmentFile, read by systemd as root: where the
		// forwarders' credentials (headers "env:NAME") are set.
		entry{src: filepath.Join(stage, "config", "server.env"), dst: "/etc/vigil/server.env", mode: 0o600, typ: files.TypeConfigNoReplace},
	)
	s.entries = append(s.entries, unitEntries(stage, "vigil-server.service")...)
	// The daily backup: shipped, not enabled (no maintainer script enables
	// it; the admin runs systemctl enable --now vigil-server-backup.timer).
	for _, u := range serverBackupUnits {
		s.entries = append(s.entries, unitEntries(stage, u)...)
	}
	s.entries = append(s.entries, docEntries(stage, s.name)...)
	return s
}

// debChangelog writes the gzipped Debian changelog (native package) of one
// package into the stage, as lintian expects.
func debChangelog(o *Options, stage, pkg string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s (%s) stable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n",
		pkg, o.Version, o.Version, o.Maintainer, o.MTime.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	var z bytes.Buffer
	zw, err := gzip.NewWriterLevel(&z, gzip.BestCompression)
	if err != nil {
		return fmt.Errorf("changelog: %w", err)
	}
	if _, err := zw.Write(b.Bytes()); err != nil {
		return fmt.Errorf("changelog: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("changelog: %w", err)
	}
	if err := os.WriteFile(filepath.Join(stage, "doc", pkg+".changelog.gz"), z.Bytes(), 0o644); err != nil {
		return fmt.Errorf("changelog: %w", err)
	}
	return nil
}

func writePackage(o *Options, s *pkgSpec, format, stage string) (string, error) {
	if format == FormatDeb {
		if err := debChangelog(o, stage, s.name); err != nil {
			return "", err
		}
	}
	var contents files.Contents
	for _, e := range s.entries {
		if e.packager != "" && e.packager != format {
			continue
		}
		typ := e.typ
		if typ == "" {
			typ = files.TypeFile
		}
		contents = append(contents, &files.Content{
			Source: e.src, Destination: e.dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: e.mode, MTime: o.MTime},
		})
	}
	info := &nfpm.Info{
		Name:          s.name,
		Arch:          o.Arch,
		Platform:      "linux",
		Version:       o.Version,
		VersionSchema: "none",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    o.Maintainer,
		Description:   s.description,
		Vendor:        "Vigil",
		Homepage:      "https://github.com/vigil-edge/vigil",
		License:       "Proprietary",
		MTime:         o.MTime,
		Overridables: nfpm.Overridables{
			Contents: contents,
			Umask:    0o022,
		},
	}
	level := "gzip:6"
	if o.FastCompression {
		level = "gzip:1"
	}
	switch format {
	case FormatDeb:
		info.Deb.Compression = level
		info.Depends, info.Recommends, info.Suggests = s.debDepends, s.debRecommends, s.debSuggests
		info.Scripts = s.debScripts
	case FormatRPM:
		info.Depends = s.rpmDepends
		info.Scripts = s.rpmScripts
		info.RPM.Compression = level
		info.RPM.Group = "System Environment/Daemons"
		info.RPM.Summary = strings.SplitN(s.description, "\n", 2)[0]
		info.RPM.Packager = o.Maintainer
		info.RPM.BuildHost = "vigil-build"
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, format); err != nil {
		return "", fmt.Errorf("%s %s: %w", s.name, format, err)
	}
	pkgr, err := nfpm.Get(format)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", s.name, format, err)
	}
	out := filepath.Join(o.OutDir, pkgr.ConventionalFileName(info))
	if err := writeAtomic(out, func(f *os.File) error { return pkgr.Package(info, f) }); err != nil {
		return "", fmt.Errorf("%s %s: %w", s.name, format, err)
	}
	return out, nil
}

// writeAtomic writes path through a temporary file in the same directory.
func writeAtomic(path string, write func(*os.File) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// sortedEntries returns the entries for one format, sorted by destination.
func sortedEntries(s *pkgSpec, format string) []entry {
	var out []entry
	for _, e := range s.entries {
		if e.packager == "" || e.packager == format {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].dst < out[j].dst })
	return out
}
