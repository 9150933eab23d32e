// Package installer holds the installer's files, embedded so that the package
// builder (installer/packaging, installer/cmd/vigil-package) works from any
// directory: systemd units, the sysctl drop-in, default configuration,
// maintainer scripts (deb and rpm), the offline install.sh, the copyright
// file, and the operator documentation (README.md).
package installer

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

//go:embed files README.md
var embedded embed.FS

// FS returns the files, rooted at the files directory (e.g.
// "systemd/vigil-agent.service", "scripts/deb/agent-postinst").
func FS() fs.FS {
	sub, err := fs.Sub(embedded, "files")
	if err != nil {
		panic(err) // files/ is always embedded
	}
	return sub
}

// README returns installer/README.md, shipped as the packages'
// /usr/share/doc/<package>/README.md.
func README() []byte {
	b, err := embedded.ReadFile("README.md")
	if err != nil {
		panic(err) // README.md is always embedded
	}
	return b
}

// Read returns one file's content.
func Read(name string) ([]byte, error) {
	b, err := fs.ReadFile(FS(), name)
	if err != nil {
		return nil, fmt.Errorf("read installer file %s: %w", name, err)
	}
	return b, nil
}

// WriteTo copies every file into dir (created), keeping the layout; shell
// scripts (under scripts/, or named *.sh) get mode 0755, the rest 0644.
func WriteTo(dir string) error {
	return fs.WalkDir(FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return fmt.Errorf("write installer files: %w", err)
			}
			return nil
		}
		b, err := fs.ReadFile(FS(), p)
		if err != nil {
			return fmt.Errorf("write installer files: %w", err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(p, ".sh") || strings.HasPrefix(p, "scripts/") {
			mode = 0o755
		}
		if err := os.WriteFile(dst, b, mode); err != nil {
			return fmt.Errorf("write installer files: %w", err)
		}
		if err := os.Chmod(dst, mode); err != nil {
			return fmt.Errorf("write installer files: %w", err)
		}
		return nil
	})
}
