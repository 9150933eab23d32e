package watch

import (
	"fmt"
	"path"
	"strings"
)

// glob is one include or exclude pattern. A pattern without a slash matches
// the base name at any depth ("*.log", "node_modules"); a pattern with a
// slash matches the whole path relative to the watch root, segment by segment
// with path.Match, where a "**" segment matches zero or more segments
// ("build/**", "**/cache/*.tmp", "var/*/spool").
type glob struct {
	pat  string
	segs []string
	base bool
}

func compileGlobs(pats []string) ([]glob, error) {
	out := make([]glob, 0, len(pats))
	for _, p := range pats {
		p = strings.Trim(p, "/")
		if p == "" {
			return nil, fmt.Errorf("empty glob pattern")
		}
		segs := strings.Split(p, "/")
		for _, s := range segs {
			if s == "**" {
				continue
			}
			if strings.Contains(s, "**") {
				return nil, fmt.Errorf("glob %q: \"**\" must be a whole path segment", p)
			}
			if _, err := path.Match(s, ""); err != nil {
				return nil, fmt.Errorf("glob %q: %w", p, err)
			}
		}
		out = append(out, glob{pat: p, segs: segs, base: len(segs) == 1 && segs[0] != "**"})
	}
	return out, nil
}

// match reports whether rel (slash separated, relative to the root, no
// leading slash) matches the pattern.
func (g *glob) match(rel string) bool {
	if g.base {
		ok, _ := path.Match(g.segs[0], path.Base(rel))
		return ok
	}
	return matchSegs(g.segs, rel)
}

func matchSegs(segs []string, rel string) bool {
	for len(segs) > 0 {
		if segs[0] == "**" {
			segs = segs[1:]
			if len(segs) == 0 {
				return true
			}
			// Try the rest of the pattern at every segment boundary.
			for {
				if matchSegs(segs, rel) {
					return true
				}
				i := strings.IndexByte(rel, '/')
				if i < 0 {
					return false
				}
				rel = rel[i+1:]
			}
		}
		if rel == "" {
			return false
		}
		head, rest, _ := strings.Cut(rel, "/")
		if ok, _ := path.Match(segs[0], head); !ok {
			return false
		}
		segs, rel = segs[1:], rest
	}
	return rel == ""
}

func anyMatch(gs []glob, rel string) bool {
	for i := range gs {
		if gs[i].match(rel) {
			return true
		}
	}
	return false
}
