package console

import (
	"regexp"
	"strings"
	"testing"
)

// TestPagedListsLoadMore: every console page that lists a paged API
// collection (findings, suppressions, audit: the API answers with
// next_cursor when there is more) follows the cursor. The audit page asked
// for the newest 200 entries only, so older entries could not be seen in
// the console at all.
func TestPagedListsLoadMore(t *testing.T) {
	b, err := assets.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	start := regexp.MustCompile(`(?m)^pages\.(\w+) = `)
	locs := start.FindAllStringSubmatchIndex(js, -1)
	pages := map[string]string{}
	for i, l := range locs {
		end := len(js)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		pages[js[l[2]:l[3]]] = js[l[0]:end]
	}
	for page, path := range map[string]string{"findings": "/findings?", "suppressions": "/suppressions?", "audit": "/audit?"} {
		src, ok := pages[page]
		if !ok {
			t.Errorf("no pages.%s in app.js", page)
			continue
		}
		if !strings.Contains(src, "'"+path) {
			t.Errorf("pages.%s does not list %s", page, path)
		}
		if !strings.Contains(src, "next_cursor") || !strings.Contains(src, "cursor") || !strings.Contains(src, "Load more") {
			t.Errorf("pages.%s lists %s without following next_cursor (\"Load more\")", page, path)
		}
	}
}
