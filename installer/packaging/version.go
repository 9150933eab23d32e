package packaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// validVersion is what both dpkg and rpm accept as an upstream version with
// no Debian revision and no rpm release: a digit first, then letters,
// digits, '.', '+' and '~' (no '-': dpkg would read a revision, rpm refuses
// it; no ':': an epoch).
var validVersion = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]{0,127}$`)

// ValidateVersion checks that v is usable as a deb and rpm version.
func ValidateVersion(v string) error {
	if !validVersion.MatchString(v) {
		return fmt.Errorf("version %q: want a digit, then letters, digits, '.', '+' or '~' (at most 128)", v)
	}
	return nil
}

var (
	tagRE  = regexp.MustCompile(`^v?([0-9]+(?:\.[0-9]+)*)(?:-([0-9A-Za-z.]+?))?(?:-([0-9]+)-g([0-9a-f]{4,40}))?$`)
	hashRE = regexp.MustCompile(`^[0-9a-f]{4,40}$`)
)

// VersionFromDescribe converts the output of `git describe --tags --always
// --dirty` into a deb/rpm version that sorts the way releases do:
//
//	v1.2.3                 -> 1.2.3
//	v1.2.3-rc.1            -> 1.2.3~rc.1          (before 1.2.3)
//	v1.2.3-4-gabcdef0      -> 1.2.3+git4.abcdef0  (after 1.2.3)
//	abcdef0 (no tag)       -> 0.0.0~git<commits>.abcdef0
//	...-dirty              -> ... with ".dirty" appended
//
// commits is the number of commits on HEAD (`git rev-list --count HEAD`),
// which orders untagged builds of one branch.
func VersionFromDescribe(describe string, commits int) (string, error) {
	d := strings.TrimSpace(describe)
	dirty := false
	if s, ok := strings.CutSuffix(d, "-dirty"); ok {
		d, dirty = s, true
	}
	var v string
	switch {
	case hashRE.MatchString(d):
		v = fmt.Sprintf("0.0.0~git%d.%s", commits, d)
	default:
		m := tagRE.FindStringSubmatch(d)
		if m == nil {
			return "", fmt.Errorf("version from git describe %q: not vX.Y.Z[-pre][-N-gHASH] nor a commit hash", describe)
		}
		v = m[1]
		if m[2] != "" {
			v += "~" + m[2]
		}
		if m[3] != "" {
			v += "+git" + m[3] + "." + m[4]
		}
	}
	if dirty {
		v += ".dirty"
	}
	if err := ValidateVersion(v); err != nil {
		return "", fmt.Errorf("version from git describe %q: %w", describe, err)
	}
	return v, nil
}

// GitVersion computes the package version of the work tree in dir (see
// VersionFromDescribe) and the time of its HEAD commit, used as the files'
// modification time so that builds are reproducible.
func GitVersion(ctx context.Context, dir string) (version string, commitTime time.Time, err error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("git %s: %s: %w", strings.Join(args, " "), strings.TrimSpace(stderr.String()), err)
		}
		return strings.TrimSpace(out.String()), nil
	}
	desc, err := git("describe", "--tags", "--always", "--dirty")
	if err != nil {
		return "", time.Time{}, fmt.Errorf("version from git: %w", err)
	}
	n := 0
	if s, err := git("rev-list", "--count", "HEAD"); err == nil {
		n, _ = strconv.Atoi(s)
	}
	version, err = VersionFromDescribe(desc, n)
	if err != nil {
		return "", time.Time{}, err
	}
	if s, err := git("log", "-1", "--format=%ct"); err == nil {
		if sec, err := strconv.ParseInt(s, 10, 64); err == nil {
			commitTime = time.Unix(sec, 0).UTC()
		}
	}
	if commitTime.IsZero() {
		return "", time.Time{}, errors.New("version from git: no commit time")
	}
	return version, commitTime, nil
}
