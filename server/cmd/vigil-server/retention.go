package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/server/app"
)

// maxRetention bounds --retention (a century): days beyond it are a typo,
// and would overflow time.Duration not far above.
const maxRetention = 100 * 365 * 24 * time.Hour

// parseRetention reads --retention: "0" or "off" (keep findings for ever),
// whole days ("365d"), or a Go duration ("8760h"); anything but 0 at least
// app.MinRetention.
func parseRetention(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	switch {
	case s == "0" || s == "off":
		return 0, nil
	case strings.HasSuffix(s, "d"):
		n, err := strconv.ParseUint(strings.TrimSuffix(s, "d"), 10, 32)
		if err != nil || time.Duration(n) > maxRetention/(24*time.Hour) {
			return 0, fmt.Errorf("retention %q: want whole days such as 365d, at most %dd", s, maxRetention/(24*time.Hour))
		}
		d = time.Duration(n) * 24 * time.Hour
	default:
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("retention %q: want 0, off, days such as 365d, or a duration such as 8760h", s)
		}
	}
	if d < app.MinRetention || d > maxRetention {
		return 0, fmt.Errorf("retention %q: want 0 (keep for ever) or between 1d and %dd", s, maxRetention/(24*time.Hour))
	}
	return d, nil
}

// formatRetention is parseRetention's inverse: days when whole.
func formatRetention(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	default:
		return d.String()
	}
}

// retentionFlag is --retention as a pflag.Value.
type retentionFlag struct{ d *time.Duration }

func (f retentionFlag) String() string {
	if f.d == nil {
		return "0"
	}
	return formatRetention(*f.d)
}

func (f retentionFlag) Set(s string) error {
	d, err := parseRetention(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

func (retentionFlag) Type() string { return "days" }
