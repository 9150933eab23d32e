package e2e

// Installer tests (issue 8): the packages built by installer/packaging from
// $VIGIL_BIN are linted and inspected (TestInstallerPackages), their units
// pass `systemd-analyze verify` (TestInstallerUnitsVerify), and the .deb and
// the offline bundle are installed into a fresh Debian root, enrolled
// against a real server on the host's loopback, run as the unit would,
// upgraded and purged (TestInstallerDebianRoot).

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/installer"
	"github.com/vigil-edge/vigil/installer/packaging"
)

// instAllowedLintianOverrides is the documented list of lintian tags the
// packages override (installer/files/lintian/*, each with its reason there).
// Anything else lintian reports at warning or error level fails the test.
var instAllowedLintianOverrides = map[string]bool{
	"statically-linked-binary": true, // CGO_ENABLED=0 Go binaries, on purpose
	"no-manual-page":           true, // --help and README.md are the reference
	"repeated-path-segment":    true, // /usr/lib/vigil/lib: the plugins' ../lib
	"non-standard-file-perm":   true, // /etc/vigil/server.env 0600: the forwarders' credentials
}

const (
	instCacheDir  = "/var/cache/vigil-test"
	instRootTar   = instCacheDir + "/bookworm-minbase.tar"
	instMirror    = "http://deb.debian.org/debian"
	instChrootEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

func instRequireE2E(t *testing.T) string {
	t.Helper()
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("builds packages from real binaries: set VIGIL_E2E=1 and VIGIL_BIN (make test does)")
	}
	bin := os.Getenv("VIGIL_BIN")
	if bin == "" {
		t.Skip("VIGIL_BIN (the bin/ of make build) is not set")
	}
	for _, b := range []string{"vigil-agent", "vigil-server", "vigilctl"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("VIGIL_BIN=%s lacks %s: run make build", bin, b)
		}
	}
	return bin
}

// instRun runs a command with a deadline and returns its combined output; it
// fails the test on error.
func instRun(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := instRunErr(timeout, nil, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func instRunErr(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	return string(out), err
}

// instTrustPolicy writes a trust.json trusting one fresh ECDSA P-256 key.
func instTrustPolicy(t *testing.T, dir string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	id := sha256.Sum256(der)
	pol := map[string]any{"version": 1, "threshold": 1, "keys": []map[string]string{{
		"id": hex.EncodeToString(id[:]), "public_key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		"comment": "installer e2e test key",
	}}}
	b, err := json.MarshalIndent(pol, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "trust.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type instArtifacts struct {
	dir                      string
	agentDeb, serverDeb      string
	agentRPM, serverRPM      string
	bundle                   string
	signingKey               *ecdsa.PrivateKey
	version, trustPolicyPath string
}

// instBuild builds the packages of bin at version into a fresh directory.
func instBuild(t *testing.T, bin, version string, formats ...string) *instArtifacts {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := &instArtifacts{dir: filepath.Join(dir, "dist"), signingKey: key, version: version, trustPolicyPath: instTrustPolicy(t, dir)}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := packaging.Build(ctx, packaging.Options{
		BinDir: bin, OutDir: a.dir, Version: version, TrustPolicy: a.trustPolicyPath, SigningKey: key,
		MTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Formats: formats, FastCompression: true,
	})
	if err != nil {
		t.Fatalf("build packages: %v", err)
	}
	t.Logf("built %s %v in %s", version, formats, time.Since(start).Round(time.Millisecond))
	for _, p := range res.Artifacts {
		b := filepath.Base(p)
		switch {
		case strings.HasPrefix(b, "vigil-agent_") && strings.HasSuffix(b, ".deb"):
			a.agentDeb = p
		case strings.HasPrefix(b, "vigil-server_") && strings.HasSuffix(b, ".deb"):
			a.serverDeb = p
		case strings.HasPrefix(b, "vigil-agent-") && strings.HasSuffix(b, ".rpm"):
			a.agentRPM = p
		case strings.HasPrefix(b, "vigil-server-") && strings.HasSuffix(b, ".rpm"):
			a.serverRPM = p
		case strings.HasSuffix(b, ".tar.gz"):
			a.bundle = p
		}
	}
	return a
}

// TestInstallerPackages builds every artifact, checks the checksums and
// their signature, lints the .debs with lintian and inspects the modes and
// owners of every file in the .debs, the .rpms and the offline bundle.
func TestInstallerPackages(t *testing.T) {
	bin := instRequireE2E(t)
	a := instBuild(t, bin, "1.2.3~e2e1")
	for _, p := range []string{a.agentDeb, a.serverDeb, a.agentRPM, a.serverRPM, a.bundle} {
		if p == "" {
			t.Fatalf("missing artifact in %s", a.dir)
		}
	}

	t.Run("checksums", func(t *testing.T) {
		if err := packaging.VerifyFile(&a.signingKey.PublicKey, filepath.Join(a.dir, packaging.ChecksumsFile)); err != nil {
			t.Fatal(err)
		}
		if err := packaging.VerifyChecksums(a.dir); err != nil {
			t.Fatal(err)
		}
		sums, err := os.ReadFile(filepath.Join(a.dir, packaging.ChecksumsFile))
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(sums), "\n"); n != 5 {
			t.Errorf("SHA256SUMS lists %d files, want 5:\n%s", n, sums)
		}
		if _, err := exec.LookPath("sha256sum"); err == nil {
			cmd := exec.Command("sha256sum", "--strict", "-c", packaging.ChecksumsFile)
			cmd.Dir = a.dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("sha256sum -c: %v\n%s", err, out)
			}
		}
		// The documented openssl check (installer/README.md).
		if _, err := exec.LookPath("openssl"); err != nil {
			t.Log("openssl not installed: documented verification not exercised")
			return
		}
		der, err := x509.MarshalPKIXPublicKey(&a.signingKey.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		pub := filepath.Join(t.TempDir(), "release.pub")
		if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		sigB64, err := os.ReadFile(filepath.Join(a.dir, packaging.SignatureFile))
		if err != nil {
			t.Fatal(err)
		}
		sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sigB64)))
		if err != nil {
			t.Fatal(err)
		}
		sigDER := filepath.Join(t.TempDir(), "sig.der")
		if err := os.WriteFile(sigDER, sig, 0o644); err != nil {
			t.Fatal(err)
		}
		instRun(t, 30*time.Second, "openssl", "dgst", "-sha256", "-verify", pub, "-signature", sigDER, filepath.Join(a.dir, packaging.ChecksumsFile))
	})

	t.Run("deb contents", func(t *testing.T) {
		for _, tc := range []struct {
			deb       string
			want      []string
			conffiles []string
		}{
			{a.agentDeb, []string{
				"/usr/bin/vigil-agent", "/usr/lib/vigil/plugins/vigil-detector-netflow", "/usr/lib/vigil/lib/libonnxruntime.so",
				"/etc/vigil/agent.yaml", "/etc/vigil/trust.json", "/lib/systemd/system/vigil-agent.service",
				"/usr/lib/sysctl.d/60-vigil.conf", "/usr/share/doc/vigil-agent/copyright", "/usr/share/vigil/models/",
			}, []string{"/etc/vigil/agent.yaml", "/etc/vigil/trust.json"}},
			{a.serverDeb, []string{
				"/usr/bin/vigil-server", "/usr/bin/vigilctl", "/etc/vigil/server.env", "/lib/systemd/system/vigil-server.service",
				"/lib/systemd/system/vigil-server-backup.service", "/lib/systemd/system/vigil-server-backup.timer",
				"/usr/share/doc/vigil-server/copyright",
			}, []string{"/etc/vigil/server.env"}},
		} {
			listing := instRun(t, time.Minute, "dpkg-deb", "-c", tc.deb)
			files := instCheckListing(t, filepath.Base(tc.deb), instParseDpkgListing(t, listing))
			for _, w := range tc.want {
				if _, ok := files[w]; !ok {
					t.Errorf("%s lacks %s", filepath.Base(tc.deb), w)
				}
			}
			conf := instRun(t, time.Minute, "dpkg-deb", "-I", tc.deb, "conffiles")
			if got := strings.Fields(conf); strings.Join(got, " ") != strings.Join(tc.conffiles, " ") {
				t.Errorf("%s conffiles %q, want %q", filepath.Base(tc.deb), got, tc.conffiles)
			}
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				if out, err := instRunErr(time.Minute, nil, "dpkg-deb", "-I", tc.deb, s); err != nil || !strings.HasPrefix(out, "#!/bin/sh") {
					t.Errorf("%s: maintainer script %s: %v %.40q", filepath.Base(tc.deb), s, err, out)
				}
			}
		}
		if models, _ := filepath.Glob(filepath.Join(os.Getenv("VIGIL_BIN"), "models", "*.vgb")); len(models) > 0 {
			listing := instRun(t, time.Minute, "dpkg-deb", "-c", a.agentDeb)
			for _, m := range models {
				if !strings.Contains(listing, "./usr/share/vigil/models/"+filepath.Base(m)) {
					t.Errorf("agent .deb lacks the baseline bundle %s", filepath.Base(m))
				}
			}
		}
	})

	t.Run("lintian", func(t *testing.T) {
		if _, err := exec.LookPath("lintian"); err != nil {
			t.Skip("lintian not installed (apt-get install lintian; .ci/run installs it)")
		}
		for _, pkg := range []string{"vigil-agent", "vigil-server"} {
			b, err := installer.Read("lintian/" + pkg)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(b), "\n") {
				line = strings.TrimSpace(line)
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				f := strings.Fields(line)
				if len(f) < 2 || f[0] != pkg+":" || !instAllowedLintianOverrides[f[1]] {
					t.Errorf("lintian override %q of %s is not in the documented list", line, pkg)
				}
			}
		}
		start := time.Now()
		out, err := instRunErr(5*time.Minute, nil, "lintian", "--fail-on", "error,warning", "--no-tag-display-limit", a.agentDeb, a.serverDeb)
		t.Logf("lintian in %s", time.Since(start).Round(time.Millisecond))
		var tags []string
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
				tags = append(tags, line)
			}
		}
		if err != nil || len(tags) > 0 {
			t.Errorf("lintian: %v\n%s", err, strings.Join(tags, "\n"))
		}
	})

	t.Run("rpm", func(t *testing.T) {
		if _, err := exec.LookPath("rpm"); err != nil {
			t.Skip("rpm not installed (apt-get install rpm; .ci/run installs it)")
		}
		for _, tc := range []struct {
			rpm             string
			want, conffiles []string
			requires        string
		}{
			{a.agentRPM, []string{"/usr/bin/vigil-agent", "/usr/lib/vigil/plugins/vigil-detector-netflow", "/usr/lib/vigil/lib/libonnxruntime.so",
				"/etc/vigil/agent.yaml", "/etc/vigil/trust.json", "/usr/lib/systemd/system/vigil-agent.service", "/usr/lib/sysctl.d/60-vigil.conf"},
				[]string{"/etc/vigil/agent.yaml", "/etc/vigil/trust.json"}, "shadow-utils"},
			{a.serverRPM, []string{"/usr/bin/vigil-server", "/usr/bin/vigilctl", "/etc/vigil/server.env", "/usr/lib/systemd/system/vigil-server.service",
				"/usr/lib/systemd/system/vigil-server-backup.service", "/usr/lib/systemd/system/vigil-server-backup.timer"},
				[]string{"/etc/vigil/server.env"}, "shadow-utils"},
		} {
			name := filepath.Base(tc.rpm)
			list := instRun(t, time.Minute, "rpm", "-qpl", tc.rpm)
			have := map[string]bool{}
			for _, l := range strings.Split(strings.TrimSpace(list), "\n") {
				have[l] = true
			}
			for _, w := range tc.want {
				if !have[w] {
					t.Errorf("%s lacks %s (rpm -qpl)", name, w)
				}
			}
			// --dump: path size mtime digest mode owner group isconfig isdoc rdev symlink
			files := map[string]instFile{}
			for _, l := range strings.Split(strings.TrimSpace(instRun(t, time.Minute, "rpm", "-qp", "--dump", tc.rpm)), "\n") {
				f := strings.Fields(l)
				if len(f) < 9 {
					t.Fatalf("%s: rpm --dump line %q", name, l)
				}
				mode, err := strconv.ParseUint(f[4], 8, 32)
				if err != nil {
					t.Fatalf("%s: mode in %q: %v", name, l, err)
				}
				files[f[0]] = instFile{path: f[0], mode: os.FileMode(mode & 0o7777), dir: mode&0o170000 == 0o040000,
					link: mode&0o170000 == 0o120000, owner: f[5], group: f[6]}
			}
			instCheckListing(t, name, files)
			conf := strings.Fields(instRun(t, time.Minute, "rpm", "-qp", "--configfiles", tc.rpm))
			if strings.Join(conf, " ") != strings.Join(tc.conffiles, " ") {
				t.Errorf("%s config files %q, want %q", name, conf, tc.conffiles)
			}
			if req := instRun(t, time.Minute, "rpm", "-qp", "--requires", tc.rpm); !strings.Contains(req, tc.requires) {
				t.Errorf("%s requires %q, want %s", name, req, tc.requires)
			}
			scripts := instRun(t, time.Minute, "rpm", "-qp", "--scripts", tc.rpm)
			for _, s := range []string{"preinstall", "postinstall", "preuninstall", "postuninstall"} {
				if !strings.Contains(scripts, s+" scriptlet") {
					t.Errorf("%s has no %s scriptlet", name, s)
				}
			}
		}
	})

	t.Run("offline bundle", func(t *testing.T) {
		files := instReadBundle(t, a.bundle)
		top := strings.TrimSuffix(filepath.Base(a.bundle), ".tar.gz") + "/"
		for _, w := range []string{"install.sh", "payload.sha256", "VERSION", "usr/bin/vigil-agent", "usr/lib/vigil/lib/libonnxruntime.so",
			"usr/lib/vigil/plugins/vigil-detector-netflow", "etc/vigil/agent.yaml", "etc/vigil/trust.json",
			"systemd/vigil-agent.service", "usr/lib/sysctl.d/60-vigil.conf"} {
			if _, ok := files["/"+top+w]; !ok {
				t.Errorf("bundle lacks %s", w)
			}
		}
		if f := files["/"+top+"install.sh"]; f.mode != 0o755 {
			t.Errorf("install.sh mode %o", f.mode)
		}
		instCheckListing(t, filepath.Base(a.bundle), files)
	})
}

// instFile is one file of a package listing.
type instFile struct {
	path         string
	mode         os.FileMode // permission bits
	dir, link    bool
	owner, group string
}

// instParseDpkgListing parses `dpkg-deb -c`: "-rwxr-xr-x root/root 123 2026-01-02 03:04 ./usr/bin/x".
func instParseDpkgListing(t *testing.T, listing string) map[string]instFile {
	t.Helper()
	files := map[string]instFile{}
	for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || len(f[0]) != 10 {
			t.Fatalf("dpkg-deb -c line %q", l)
		}
		var mode os.FileMode
		for i, c := range f[0][1:] {
			if c != '-' {
				mode |= 1 << (8 - i)
			}
		}
		// setuid/setgid/sticky show as s/S/t/T in the x places.
		if strings.ContainsAny(f[0][1:], "sStT") {
			mode |= os.ModeSetuid
		}
		owner, group, _ := strings.Cut(f[1], "/")
		p := strings.TrimPrefix(f[5], ".")
		files[p] = instFile{path: p, mode: mode, dir: f[0][0] == 'd', link: f[0][0] == 'l', owner: owner, group: group}
	}
	return files
}

// instCheckListing applies the file rules to a package: everything owned by
// root, nothing world-writable, no setuid/setgid, keys and server.env 0600, executables
// 0755, everything else 0644 (directories 0755).
func instCheckListing(t *testing.T, name string, files map[string]instFile) map[string]instFile {
	t.Helper()
	if len(files) == 0 {
		t.Fatalf("%s: empty listing", name)
	}
	for p, f := range files {
		if f.owner != "root" || f.group != "root" {
			t.Errorf("%s: %s owned by %s:%s, want root:root", name, p, f.owner, f.group)
		}
		if f.link {
			continue
		}
		if f.mode&0o002 != 0 {
			t.Errorf("%s: %s is world-writable (%o)", name, p, f.mode)
		}
		if f.mode&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
			t.Errorf("%s: %s has setuid/setgid/sticky bits", name, p)
		}
		var want os.FileMode
		switch {
		case f.dir:
			want = 0o755
		case strings.HasSuffix(p, ".key"), p == "/etc/vigil/server.env":
			want = 0o600
		case strings.Contains(p, "/usr/bin/") || strings.Contains(p, "/usr/lib/vigil/plugins/") || strings.HasSuffix(p, "/install.sh"):
			want = 0o755
		default:
			want = 0o644
		}
		if f.mode.Perm() != want {
			t.Errorf("%s: %s mode %04o, want %04o", name, p, f.mode.Perm(), want)
		}
	}
	return files
}

func instReadBundle(t *testing.T, path string) map[string]instFile {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	zr, err := gzip.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	files := map[string]instFile{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := "/" + strings.TrimSuffix(h.Name, "/")
		if h.Typeflag == tar.TypeDir {
			p = "/" + h.Name
		}
		files[strings.TrimSuffix(p, "/")] = instFile{path: p, mode: os.FileMode(h.Mode & 0o777), dir: h.Typeflag == tar.TypeDir,
			link: h.Typeflag == tar.TypeSymlink, owner: map[bool]string{true: "root"}[h.Uid == 0 && h.Uname == "root"],
			group: map[bool]string{true: "root"}[h.Gid == 0 && h.Gname == "root"]}
		if h.Mode&0o7000 != 0 {
			t.Errorf("%s: %s has special mode bits %o", filepath.Base(path), h.Name, h.Mode)
		}
	}
	return files
}

// TestInstallerUnitsVerify runs `systemd-analyze verify` (and the offline
// `security` scoring) on both units in a scratch root holding the host's
// systemd units, a /bin/sh and stand-ins for the binaries the units name.
// Any diagnostic fails the test: verify exits 0 on unknown or unparsable
// settings, it only prints them.
func TestInstallerUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd): units not verified")
	}
	sysUnits := "/usr/lib/systemd/system"
	if _, err := os.Stat(filepath.Join(sysUnits, "sysinit.target")); err != nil {
		t.Skipf("no systemd units on this host (%s/sysinit.target): cannot verify", sysUnits)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	instRun(t, time.Minute, "cp", "-a", sysUnits, filepath.Join(root, "usr/lib/systemd/"))
	for _, exe := range []string{"usr/bin/vigil-agent", "usr/bin/vigil-server", "usr/bin/vigilctl", "usr/bin/install", "bin/sh"} {
		p := filepath.Join(root, exe)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/false\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		unit      string
		threshold int // highest acceptable exposure of `systemd-analyze security`, 0-100 (shown as 0.0-10.0)
		must      []string
	}{
		{"vigil-agent.service", 20, []string{
			"User=vigil\n", "InaccessiblePaths=-/var/lib/vigil-server\n", "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN\n", "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN\n",
			"ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes", "StateDirectory=vigil\n",
			"Restart=on-failure", "StartLimitIntervalSec=", "StartLimitBurst=", "MemoryMax=", "CPUQuota=",
			"ProtectKernelTunables=yes", "ProtectControlGroups=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET\n",
			"LockPersonality=yes", "SystemCallArchitectures=native",
			"ExecStart=/usr/bin/vigil-agent run --config /etc/vigil/agent.yaml --state /var/lib/vigil\n",
		}},
		{"vigil-server.service", 15, []string{
			"User=vigil-server\n", "Group=vigil-server\n", "CapabilityBoundingSet=\n", "AmbientCapabilities=\n", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
			"NoNewPrivileges=yes", "StateDirectory=vigil-server\n", "Restart=on-failure", "StartLimitIntervalSec=", "StartLimitBurst=",
			"MemoryMax=", "CPUQuota=", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n",
		}},
		{"vigil-server-backup.service", 10, []string{
			"User=vigil-server\n", "Group=vigil-server\n", "Type=oneshot\n", "CapabilityBoundingSet=\n", "PrivateNetwork=yes\n",
			"RestrictAddressFamilies=AF_UNIX\n", "ProtectSystem=strict", "NoNewPrivileges=yes", "ReadWritePaths=/var/backups/vigil-server\n",
		}},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			b, err := installer.Read("systemd/" + tc.unit)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tc.must {
				if !bytes.Contains(b, []byte("\n"+m)) {
					t.Errorf("%s lacks %q", tc.unit, strings.TrimSpace(m))
				}
			}
			dir := filepath.Join(root, "lib/systemd/system")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, tc.unit), b, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := instRunErr(time.Minute, []string{"SYSTEMD_LOG_COLOR=0"}, "systemd-analyze", "verify", "--root="+root, "/lib/systemd/system/"+tc.unit)
			if err != nil || strings.TrimSpace(out) != "" {
				t.Errorf("systemd-analyze verify %s: %v\n%s", tc.unit, err, out)
			}
			out, err = instRunErr(time.Minute, []string{"SYSTEMD_LOG_COLOR=0"}, "systemd-analyze", "security", "--offline=yes", "--no-pager",
				"--threshold="+strconv.Itoa(tc.threshold), "--root="+root, "/lib/systemd/system/"+tc.unit)
			if err != nil {
				t.Errorf("systemd-analyze security %s: exposure above %d/100: %v\n%s", tc.unit, tc.threshold, err, out)
			} else if m := regexp.MustCompile(`exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(out); m != nil {
				t.Logf("%s exposure %s/10 (threshold %d/100)", tc.unit, m[1], tc.threshold)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Debian root: install, enroll, run, upgrade, purge.

// instDebianRootTar returns the cached minbase root tarball, making it with
// debootstrap the first time (about two minutes; then reused between runs).
func instDebianRootTar(t *testing.T) string {
	t.Helper()
	if err := os.MkdirAll(instCacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(instCacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck
	if _, err := os.Stat(instRootTar); err == nil {
		return instRootTar
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Skip("debootstrap not installed (apt-get install debootstrap; .ci/run installs it) and no cached root in " + instRootTar)
	}
	hc := &http.Client{Timeout: 15 * time.Second}
	if resp, err := hc.Head(instMirror + "/dists/bookworm/Release"); err != nil {
		t.Skipf("Debian mirror unreachable, cannot make the test root: %v", err)
	} else {
		resp.Body.Close()
	}
	dir := filepath.Join(instCacheDir, "bookworm-minbase.tmp")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := instRunErr(15*time.Minute, nil, "debootstrap", "--variant=minbase", "--include=adduser", "bookworm", dir, instMirror)
	if err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, instTail(out, 3000))
	}
	instRun(t, 5*time.Minute, "tar", "-C", dir, "--numeric-owner", "-cf", instRootTar+".tmp", ".")
	if err := os.Rename(instRootTar+".tmp", instRootTar); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("debootstrap root cached in %s (%s)", instRootTar, time.Since(start).Round(time.Second))
	return instRootTar
}

func instTail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// instChroot is a fresh copy of the Debian root with /proc mounted.
type instChroot struct {
	t    *testing.T
	root string
}

func instNewChroot(t *testing.T, rootTar string) *instChroot {
	t.Helper()
	// Not t.TempDir: the directory must only be removed once nothing is
	// mounted below it, which the cleanup checks first.
	base, err := os.MkdirTemp("", "vigil-chroot-")
	if err != nil {
		t.Fatal(err)
	}
	c := &instChroot{t: t, root: filepath.Join(base, "root")}
	if err := os.Mkdir(c.root, 0o755); err != nil {
		t.Fatal(err)
	}
	var mounted []string
	t.Cleanup(func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			if err := syscall.Unmount(mounted[i], 0); err != nil {
				if err := syscall.Unmount(mounted[i], syscall.MNT_DETACH); err != nil {
					t.Errorf("unmount %s: %v", mounted[i], err)
				}
			}
		}
		if m := instMountsUnder(c.root); len(m) > 0 {
			t.Errorf("still mounted under %s, not removing it: %v", c.root, m)
			return
		}
		if err := os.RemoveAll(base); err != nil {
			t.Errorf("remove chroot: %v", err)
		}
	})
	start := time.Now()
	instRun(t, 5*time.Minute, "tar", "-C", c.root, "--numeric-owner", "-xf", rootTar)
	proc := filepath.Join(c.root, "proc")
	if err := syscall.Mount("proc", proc, "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		t.Fatalf("mount proc: %v", err)
	}
	mounted = append(mounted, proc)
	// /dev holds the device nodes debootstrap made (null, zero, urandom, ...);
	// the host's /dev is not bind-mounted.
	t.Logf("fresh Debian root in %s (%s)", c.root, time.Since(start).Round(time.Millisecond))
	return c
}

// instMountsUnder lists the mount points at or below dir.
func instMountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []string{"cannot read /proc/self/mountinfo: " + err.Error()}
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

func (c *instChroot) path(p string) string { return filepath.Join(c.root, p) }

// run runs a command inside the root (as root) and fails the test on error.
func (c *instChroot) run(timeout time.Duration, env []string, args ...string) string {
	c.t.Helper()
	out, err := c.runErr(timeout, env, args...)
	if err != nil {
		c.t.Fatalf("in chroot: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *instChroot) runErr(timeout time.Duration, env []string, args ...string) (string, error) {
	full := append([]string{c.root, "env", "-i", instChrootEnv, "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"}, env...)
	return instRunErr(timeout, nil, "chroot", append(full, args...)...)
}

func (c *instChroot) copyIn(src, dst string) {
	c.t.Helper()
	instRun(c.t, time.Minute, "cp", src, c.path(dst))
}

// user returns the uid and gid of a user of the root.
func (c *instChroot) user(name string) (uid, gid int, shell string, ok bool) {
	b, err := os.ReadFile(c.path("/etc/passwd"))
	if err != nil {
		c.t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) == 7 && f[0] == name {
			uid, _ = strconv.Atoi(f[2])
			gid, _ = strconv.Atoi(f[3])
			return uid, gid, f[6], true
		}
	}
	return 0, 0, "", false
}

func (c *instChroot) fileHash(p string) string {
	c.t.Helper()
	b, err := os.ReadFile(c.path(p))
	if err != nil {
		c.t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (c *instChroot) exists(p string) bool {
	_, err := os.Lstat(c.path(p))
	return err == nil
}

// checkInstalled checks what both installs must leave: the user, the state
// directory with the enrollment (modes, owners), the files.
func (c *instChroot) checkInstalled(unitPath string) (agentID string) {
	t := c.t
	t.Helper()
	uid, gid, shell, ok := c.user("vigil")
	if !ok {
		t.Fatal("no user vigil")
	}
	if uid == 0 || uid >= 1000 || !strings.HasSuffix(shell, "nologin") {
		t.Errorf("user vigil: uid %d, shell %s: want a system user without login", uid, shell)
	}
	for p, want := range map[string]os.FileMode{
		"/var/lib/vigil": 0o750 | os.ModeDir, "/var/lib/vigil/agent.key": 0o600, "/var/lib/vigil/identity.json": 0,
		"/usr/bin/vigil-agent": 0o755, "/usr/lib/vigil/lib/libonnxruntime.so": 0o644, "/etc/vigil/agent.yaml": 0o644,
		"/etc/vigil/trust.json": 0o644, "/usr/lib/sysctl.d/60-vigil.conf": 0o644, unitPath: 0o644,
	} {
		st, err := os.Stat(c.path(p))
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if want != 0 && st.Mode() != want {
			t.Errorf("%s mode %v, want %v", p, st.Mode(), want)
		}
		sys := st.Sys().(*syscall.Stat_t)
		wantUID, wantGID := 0, 0
		if strings.HasPrefix(p, "/var/lib/vigil") {
			wantUID, wantGID = uid, gid
		}
		if int(sys.Uid) != wantUID || int(sys.Gid) != wantGID {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, sys.Uid, sys.Gid, wantUID, wantGID)
		}
	}
	b, err := os.ReadFile(c.path("/var/lib/vigil/identity.json"))
	if err != nil {
		t.Fatalf("not enrolled: %v", err)
	}
	var id struct {
		AgentID string `json:"agent_id"`
		Entity  string `json:"entity"`
	}
	if err := json.Unmarshal(b, &id); err != nil || id.AgentID == "" || id.Entity != "acme" {
		t.Fatalf("identity.json %s: %v", b, err)
	}
	return id.AgentID
}

// instServer is a vigil-server on the host's loopback.
type instServer struct {
	bin, data, api, quic string
}

func instStartServer(t *testing.T, bin string) *instServer {
	t.Helper()
	s := &instServer{bin: bin, data: filepath.Join(t.TempDir(), "server")}
	instRun(t, time.Minute, filepath.Join(bin, "vigil-server"), "init", "--data", s.data, "--ip", "127.0.0.1")
	// Random free ports (UDP for QUIC, TCP for the API).
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.quic = pc.LocalAddr().String()
	pc.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.api = ln.Addr().String()
	ln.Close()
	logf, err := os.Create(filepath.Join(t.TempDir(), "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "vigil-server"), "run", "--data", s.data, "--quic", s.quic, "--api", s.api)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("server log:\n%s", instTail(string(b), 4000))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := s.ctl("agents", "list", "--json"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("server API not up at %s: %v", s.api, err)
		}
		select {
		case <-done:
			t.Fatal("vigil-server exited")
		case <-time.After(200 * time.Millisecond):
		}
	}
	return s
}

func (s *instServer) ctl(args ...string) (string, error) {
	tok, err := os.ReadFile(filepath.Join(s.data, "admin.token"))
	if err != nil {
		return "", err
	}
	env := []string{"VIGIL_SERVER=https://" + s.api, "VIGIL_TOKEN=" + strings.TrimSpace(string(tok)), "VIGIL_CA=" + filepath.Join(s.data, "ca.pem")}
	return instRunErr(30*time.Second, env, filepath.Join(s.bin, "vigilctl"), args...)
}

// enrollArgs mints a token and returns the arguments of the printed
// enroll command (after "vigil-agent enroll").
func (s *instServer) enrollArgs(t *testing.T) []string {
	t.Helper()
	out, err := s.ctl("token", "create", "--entity", "acme", "--json")
	if err != nil {
		t.Fatalf("vigilctl token create: %v\n%s", err, out)
	}
	var tok struct {
		Command string `json:"command"`
		Token   string `json:"token"`
		CAPin   string `json:"ca_pin"`
	}
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatalf("token create --json: %v\n%s", err, out)
	}
	f := strings.Fields(tok.Command)
	i := 0
	for i < len(f) && f[i] != "enroll" {
		i++
	}
	if i == len(f) || !strings.Contains(tok.Command, tok.Token) || !strings.Contains(tok.Command, tok.CAPin) {
		t.Fatalf("printed command %q is not a vigil-agent enroll with the token and pin", tok.Command)
	}
	return f[i+1:]
}

// lastSeen returns the agent's last_seen from `vigilctl agents list --json`.
func (s *instServer) lastSeen(t *testing.T, agentID string) time.Time {
	t.Helper()
	out, err := s.ctl("agents", "list", "--json")
	if err != nil {
		t.Fatalf("vigilctl agents list: %v\n%s", err, out)
	}
	var agents []struct {
		ID       string    `json:"id"`
		LastSeen time.Time `json:"last_seen"`
	}
	if err := json.Unmarshal([]byte(out), &agents); err != nil {
		t.Fatalf("agents list --json: %v\n%s", err, out)
	}
	for _, a := range agents {
		if a.ID == agentID {
			return a.LastSeen
		}
	}
	t.Fatalf("agent %s not listed by the server", agentID)
	return time.Time{}
}

// runAgentUntilSeen starts the installed agent inside the root as the unit
// does (user vigil, only CAP_NET_RAW and CAP_NET_ADMIN, ambient, no new
// privileges) and waits until the server has seen it after `after`.
func (c *instChroot) runAgentUntilSeen(s *instServer, agentID string, after time.Time) time.Time {
	t := c.t
	t.Helper()
	args := []string{c.root, "env", "-i", instChrootEnv, "HOME=/var/lib/vigil",
		"setpriv", "--reuid", "vigil", "--regid", "vigil", "--init-groups",
		"--inh-caps", "-all,+net_raw,+net_admin", "--ambient-caps", "-all,+net_raw,+net_admin",
		"--bounding-set", "-all,+net_raw,+net_admin", "--no-new-privs",
		// The unit's ExecStart, plus a free metrics port (tests run side by side).
		"/usr/bin/vigil-agent", "run", "--config", "/etc/vigil/agent.yaml", "--state", "/var/lib/vigil", "--metrics", "127.0.0.1:0",
	}
	var logBuf instSyncBuffer
	cmd := exec.Command("chroot", args...)
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("agent did not stop within 20s of SIGTERM")
			_ = cmd.Process.Kill()
			<-done
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if seen := s.lastSeen(t, agentID); seen.After(after) {
			stop()
			return seen
		}
		select {
		case err := <-done:
			t.Fatalf("agent exited before the server saw it: %v\n%s", err, instTail(logBuf.String(), 3000))
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("server did not see agent %s within 60s; agent log:\n%s", agentID, instTail(logBuf.String(), 3000))
		}
	}
}

type instSyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *instSyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 1<<20 {
		return len(p), nil
	}
	return b.b.Write(p)
}

func (b *instSyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// checkScan runs `vigil-agent scan` inside the root as user vigil on a
// generated capture: the installed agent must find its plugin, ONNX Runtime
// and the baseline bundles by itself.
func (c *instChroot) checkScan(bin string) {
	t := c.t
	t.Helper()
	gen := filepath.Join(bin, "vigil-trafficgen")
	if _, err := os.Stat(gen); err != nil {
		t.Log("no vigil-trafficgen in VIGIL_BIN: scan of the installed layout not checked")
		return
	}
	if models, _ := filepath.Glob(filepath.Join(bin, "models", "*.vgb")); len(models) == 0 {
		t.Log("no baseline bundles in VIGIL_BIN/models: scan of the installed layout not checked")
		return
	}
	instRun(t, time.Minute, gen, "-duration", "5s", "-sessions", "20", "-scan-ports", "50", "-out", c.path("/tmp/scan.pcap"))
	if err := os.Chmod(c.path("/tmp/scan.pcap"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := c.runErr(2*time.Minute, nil, "setpriv", "--reuid", "vigil", "--regid", "vigil", "--init-groups", "--no-new-privs",
		"/usr/bin/vigil-agent", "scan", "--pcap", "/tmp/scan.pcap", "--json")
	if err != nil {
		t.Errorf("vigil-agent scan in the installed layout (plugins in /usr/lib/vigil/plugins, bundles in /usr/share/vigil/models): %v\n%s", err, instTail(out, 2000))
		return
	}
	if !strings.Contains(out, `"summary"`) {
		t.Errorf("scan printed no summary:\n%s", instTail(out, 2000))
	}
}

// checkConfigAccepted runs the agent's config loading on the packaged
// agent.yaml. The keys plugin_dirs and model_dirs are part of the
// installer's contract with agent/config; if the agent refuses them, the
// test fails and, to still exercise the rest of the flow, removes them from
// this root's copy.
func (c *instChroot) checkConfigAccepted() {
	t := c.t
	t.Helper()
	out, _ := c.runErr(30*time.Second, nil, "setpriv", "--reuid", "vigil", "--regid", "vigil", "--init-groups",
		"timeout", "3", "/usr/bin/vigil-agent", "run", "--config", "/etc/vigil/agent.yaml", "--state", "/nonexistent-state-dir", "--metrics", "off")
	if !strings.Contains(out, "field plugin_dirs not found") && !strings.Contains(out, "field model_dirs not found") {
		return
	}
	t.Errorf("the agent refuses the packaged /etc/vigil/agent.yaml (agent/config must accept plugin_dirs and model_dirs):\n%s", instTail(out, 1000))
	p := c.path("/etc/vigil/agent.yaml")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	skip := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "plugin_dirs:") || strings.HasPrefix(l, "model_dirs:") {
			skip = true
			continue
		}
		if skip && strings.HasPrefix(l, "  - ") {
			continue
		}
		skip = false
		keep = append(keep, l)
	}
	if err := os.WriteFile(p, []byte(strings.Join(keep, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestInstallerDebianRoot installs into a fresh debootstrap'd Debian root:
// the .deb (dpkg -i with VIGIL_ENROLL, run, upgrade, purge) and the offline
// bundle (install.sh with the enroll arguments, run, upgrade, uninstall
// --purge), against a vigil-server on the host's loopback.
func TestInstallerDebianRoot(t *testing.T) {
	bin := instRequireE2E(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root (chroot, mount)")
	}
	for _, tool := range []string{"chroot", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	start := time.Now()
	rootTar := instDebianRootTar(t)
	srv := instStartServer(t, bin)
	v1 := instBuild(t, bin, "1.0.0~e2e1", packaging.FormatDeb, packaging.FormatTar)
	v2 := instBuild(t, bin, "1.0.0~e2e2", packaging.FormatDeb, packaging.FormatTar)
	t.Logf("set up in %s", time.Since(start).Round(time.Millisecond))

	t.Run("deb", func(t *testing.T) {
		c := instNewChroot(t, rootTar)
		c.copyIn(v1.agentDeb, "/tmp/vigil-agent-1.deb")
		c.copyIn(v2.agentDeb, "/tmp/vigil-agent-2.deb")

		// One command: install and enroll.
		enroll := "VIGIL_ENROLL=vigil-agent enroll " + strings.Join(srv.enrollArgs(t), " ")
		out := c.run(3*time.Minute, []string{enroll}, "dpkg", "-i", "/tmp/vigil-agent-1.deb")
		t.Logf("dpkg -i:\n%s", out)
		if regexp.MustCompile(`vge_[a-z0-9]+\.[A-Za-z0-9_-]{20,}`).MatchString(out) {
			t.Error("the enrollment token appears in the install output")
		}
		agentID := c.checkInstalled("/lib/systemd/system/vigil-agent.service")
		if !c.exists("/etc/systemd/system/multi-user.target.wants/vigil-agent.service") {
			t.Error("unit not enabled after enrollment")
		}
		if v := strings.TrimSpace(c.run(time.Minute, nil, "dpkg-query", "-W", "-f", "${Version} ${Status}", "vigil-agent")); v != "1.0.0~e2e1 install ok installed" {
			t.Errorf("dpkg-query: %q", v)
		}
		c.checkConfigAccepted()
		seen := c.runAgentUntilSeen(srv, agentID, time.Time{})
		t.Logf("first Status from %s at %s", agentID, seen.Format(time.RFC3339Nano))
		c.checkScan(bin)

		// Upgrade: state, enrollment and the admin's config edits are kept.
		kept := map[string]string{}
		for _, p := range []string{"/var/lib/vigil/identity.json", "/var/lib/vigil/agent.key", "/var/lib/vigil/agent.pem"} {
			kept[p] = c.fileHash(p)
		}
		c.editConfig()
		confHash := c.fileHash("/etc/vigil/agent.yaml")
		out = c.run(3*time.Minute, nil, "dpkg", "-i", "/tmp/vigil-agent-2.deb")
		t.Logf("upgrade:\n%s", out)
		if v := strings.TrimSpace(c.run(time.Minute, nil, "dpkg-query", "-W", "-f", "${Version} ${Status}", "vigil-agent")); v != "1.0.0~e2e2 install ok installed" {
			t.Errorf("after upgrade dpkg-query: %q", v)
		}
		for p, h := range kept {
			if c.fileHash(p) != h {
				t.Errorf("upgrade changed %s", p)
			}
		}
		if c.fileHash("/etc/vigil/agent.yaml") != confHash {
			t.Error("upgrade replaced the admin's /etc/vigil/agent.yaml")
		}
		c.checkSameFile("/etc/vigil/trust.json", v2.trustPolicyPath)
		if id := c.checkInstalled("/lib/systemd/system/vigil-agent.service"); id != agentID {
			t.Errorf("agent id changed on upgrade: %s -> %s", agentID, id)
		}
		c.runAgentUntilSeen(srv, agentID, seen)

		// Purge: state, configuration and files are gone.
		out = c.run(3*time.Minute, nil, "dpkg", "--purge", "vigil-agent")
		t.Logf("purge:\n%s", out)
		for _, p := range []string{"/var/lib/vigil", "/etc/vigil", "/usr/bin/vigil-agent", "/usr/lib/vigil", "/usr/share/vigil",
			"/lib/systemd/system/vigil-agent.service", "/etc/systemd/system/multi-user.target.wants/vigil-agent.service", "/usr/lib/sysctl.d/60-vigil.conf"} {
			if c.exists(p) {
				t.Errorf("%s left after purge", p)
			}
		}
	})

	t.Run("offline bundle", func(t *testing.T) {
		c := instNewChroot(t, rootTar)
		for i, b := range []string{v1.bundle, v2.bundle} {
			c.copyIn(b, fmt.Sprintf("/tmp/bundle-%d.tar.gz", i+1))
			c.run(2*time.Minute, nil, "mkdir", "-p", fmt.Sprintf("/tmp/b%d", i+1))
			c.run(2*time.Minute, nil, "tar", "-C", fmt.Sprintf("/tmp/b%d", i+1), "--strip-components=1", "-xzf", fmt.Sprintf("/tmp/bundle-%d.tar.gz", i+1))
		}
		args := append([]string{"/tmp/b1/install.sh"}, srv.enrollArgs(t)...)
		out := c.run(3*time.Minute, nil, args...)
		t.Logf("install.sh:\n%s", out)
		agentID := c.checkInstalled("/etc/systemd/system/vigil-agent.service")
		c.checkConfigAccepted()
		seen := c.runAgentUntilSeen(srv, agentID, time.Time{})
		c.checkScan(bin)

		// A failed upgrade (here: a new agent binary that does not run)
		// replaces nothing.
		before := c.fileHash("/usr/bin/vigil-agent")
		c.run(2*time.Minute, nil, "cp", "-a", "/tmp/b2", "/tmp/broken")
		broken := []byte("#!/bin/sh\nexit 1\n")
		if err := os.WriteFile(c.path("/tmp/broken/usr/bin/vigil-agent"), broken, 0o755); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(broken)
		payload, err := os.ReadFile(c.path("/tmp/broken/payload.sha256"))
		if err != nil {
			t.Fatal(err)
		}
		payload = regexp.MustCompile(`(?m)^[0-9a-f]{64}  usr/bin/vigil-agent$`).ReplaceAll(payload, []byte(hex.EncodeToString(sum[:])+"  usr/bin/vigil-agent"))
		if err := os.WriteFile(c.path("/tmp/broken/payload.sha256"), payload, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := c.runErr(2*time.Minute, nil, "/tmp/broken/install.sh"); err == nil {
			t.Errorf("install.sh with a broken agent binary succeeded:\n%s", out)
		} else {
			t.Logf("broken upgrade refused: %s", strings.TrimSpace(out))
		}
		if c.fileHash("/usr/bin/vigil-agent") != before {
			t.Error("a failed upgrade replaced /usr/bin/vigil-agent")
		}

		c.editConfig()
		kept := map[string]string{}
		for _, p := range []string{"/var/lib/vigil/identity.json", "/var/lib/vigil/agent.key", "/var/lib/vigil/agent.pem", "/etc/vigil/agent.yaml"} {
			kept[p] = c.fileHash(p)
		}
		out = c.run(3*time.Minute, nil, "/tmp/b2/install.sh")
		t.Logf("upgrade with install.sh:\n%s", out)
		for p, h := range kept {
			if c.fileHash(p) != h {
				t.Errorf("upgrade changed %s", p)
			}
		}
		if !c.exists("/etc/vigil/agent.yaml.new") {
			t.Error("upgrade left no agent.yaml.new next to the edited agent.yaml")
		}
		c.checkSameFile("/etc/vigil/trust.json", v2.trustPolicyPath)
		if v := strings.TrimSpace(c.run(time.Minute, nil, "cat", "/tmp/b2/VERSION")); v != "1.0.0~e2e2" {
			t.Errorf("bundle VERSION %q", v)
		}
		if b1, b2 := c.fileHash("/tmp/b2/usr/bin/vigil-agent"), c.fileHash("/usr/bin/vigil-agent"); b1 != b2 {
			t.Error("upgrade did not install the new vigil-agent")
		}
		if id := c.checkInstalled("/etc/systemd/system/vigil-agent.service"); id != agentID {
			t.Errorf("agent id changed on upgrade: %s -> %s", agentID, id)
		}
		c.runAgentUntilSeen(srv, agentID, seen)
		leftover := instListFiles(t, c, "/usr/lib/vigil/offline-install.list")

		out = c.run(3*time.Minute, nil, "/tmp/b2/install.sh", "--uninstall", "--purge")
		t.Logf("uninstall:\n%s", out)
		for _, p := range append(leftover, "/var/lib/vigil", "/etc/vigil", "/usr/lib/vigil", "/usr/share/vigil", "/etc/systemd/system/vigil-agent.service") {
			if c.exists(p) {
				t.Errorf("%s left after uninstall --purge", p)
			}
		}
	})
}

// editConfig appends a comment to /etc/vigil/agent.yaml, as an admin would.
func (c *instChroot) editConfig() {
	c.t.Helper()
	f, err := os.OpenFile(c.path("/etc/vigil/agent.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, "# edited by the admin"); err != nil {
		c.t.Fatal(err)
	}
}

// checkSameFile checks that a file of the root has the content of a host file.
func (c *instChroot) checkSameFile(p, host string) {
	c.t.Helper()
	b, err := os.ReadFile(host)
	if err != nil {
		c.t.Fatal(err)
	}
	if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != c.fileHash(p) {
		c.t.Errorf("%s is not the new version's (an untouched default must follow upgrades)", p)
	}
}

func instListFiles(t *testing.T, c *instChroot, list string) []string {
	t.Helper()
	f, err := os.Open(c.path(list))
	if err != nil {
		t.Fatalf("offline install list: %v", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	if len(out) < 5 {
		t.Errorf("offline install list has %d files", len(out))
	}
	return out
}
