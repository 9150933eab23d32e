package ctl

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vigil-edge/vigil/internal/termsafe"
)

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(headers...)
	return t
}

// row writes one line; every column goes through safeText (tabs and newlines included, so that
// a column cannot break the table).
func (t *table) row(cols ...string) {
	for i, c := range cols {
		cols[i] = safeText(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error {
	if err := t.tw.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// ago renders a past time relative to now ("-" for zero).
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	if d < 0 {
		return t.Local().Format("2006-01-02 15:04:05")
	}
	return d.String() + " ago"
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func truncate(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// safeText makes text that others control printable on the operator's terminal (termsafe.Text).
func safeText(s string) string { return termsafe.Text(s) }

// unsafeRune reports whether safeText escapes r.
func unsafeRune(r rune) bool { return termsafe.Unsafe(r) }
