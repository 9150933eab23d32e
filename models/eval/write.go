package eval

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// Files written by WriteFiles.
const (
	MarkdownFile = "eval.md"
	JSONFile     = "eval.json"
	SVGFile      = "roc.svg"
)

// WriteFiles writes eval.md, eval.json and roc.svg into dir.
func (r *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write evaluation: %w", err)
	}
	for name, write := range map[string]func(io.Writer) error{
		MarkdownFile: r.WriteMarkdown, JSONFile: r.WriteJSON, SVGFile: r.WriteSVG,
	} {
		if err := writeFile(filepath.Join(dir, name), write); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	bw := bufio.NewWriter(f)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("encode evaluation: %w", err)
	}
	return nil
}

func pct(x float64) string { return fmt.Sprintf("%.3f%%", 100*x) }

// mdCell escapes s for a Markdown table cell: a pipe would end the cell, a
// line ending (LF, CR or both: CommonMark ends a line at each) the row.
func mdCell(s string) string {
	return strings.NewReplacer("|", "\\|", "\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

// WriteMarkdown writes the report as Markdown.
func (r *Report) WriteMarkdown(w io.Writer) error {
	ew := &errWriter{w: w}
	p := ew.printf
	m := r.Model
	p("# Evaluation of %s version %d (%s)\n\n", m.Name, m.Version, m.FeatureSet)
	p("Model: %s, dim %d, quantization %s", m.FeatureSet, m.Dim, m.Quantization)
	if m.Digest != "" {
		p(", bundle %s", m.Digest)
	}
	p(".\n\n")
	u := m.unit()
	p("Benign: %d captures, %d %s (score p99 %.4g, max %.4g). Attack %s: %d from %d captures ", r.BenignFiles, r.BenignPackets, u, r.BenignP99, r.BenignMax, u, r.AttackPackets, r.Captures)
	p("(the attacker's packets where ground truth names one, all of the capture's %s otherwise).\n\n", u)
	p("| metric | value |\n|---|---|\n")
	p("| ROC AUC | %.4f |\n| PR AUC (average precision) | %.4f |\n", r.ROCAUC, r.PRAUC)
	p("| calibrated threshold (bundle) | %.6g |\n", r.AtThreshold.Threshold)
	p("| FPR / TPR at the calibrated threshold | %s / %s |\n", pct(r.AtThreshold.FPR), pct(r.AtThreshold.TPR))
	p("| threshold at FPR %s on these benign %s | %.6g |\n", pct(r.TargetFPR), u, r.AtTargetFPR.Threshold)
	p("| FPR / TPR at that threshold | %s / %s |\n", pct(r.AtTargetFPR.FPR), pct(r.AtTargetFPR.TPR))
	p("| attack captures detected (calibrated threshold) | %d of %d |\n", r.Detected, r.Captures)
	for _, t := range r.Throughput {
		p("| scoring throughput, batch %d | %.0f vectors/s (%d vectors in %.3f s) |\n", t.Batch, t.PerSec, t.Vectors, t.Seconds)
	}
	if r.Undercounted {
		p("\nFewer benign %s (%d) than 1/FPR: the threshold at FPR %s is the benign maximum and under-determined.\n", u, r.BenignPackets, pct(r.TargetFPR))
	}
	p("\n## Attack captures\n\n")
	p("TPR and AUCs are over the capture's attack %s against all benign %s; first detection is the event time from the first attack %s to the first flagged one.\n\n", u, u, strings.TrimSuffix(u, "s"))
	p("| capture | what | attacker | %s | flagged | attack %s | detected | TPR | TPR at FPR %s | ROC AUC | PR AUC | first detection s |\n", u, u, pct(r.TargetFPR))
	p("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, a := range r.Attacks {
		if a.Error != "" {
			p("| %s | %s | %s | - | - | - | error: %s | | | | | |\n", mdCell(a.File), mdCell(a.What), mdCell(a.Attacker), mdCell(a.Error))
			continue
		}
		det := "no"
		if a.Detected {
			det = "yes"
		}
		first := "-"
		if a.FirstDetection != nil {
			first = fmt.Sprintf("%.3f", *a.FirstDetection)
		}
		ap := fmt.Sprintf("%d", a.AttackPackets)
		if !a.Labelled {
			ap += " (unlabelled: all)"
		}
		packets := fmt.Sprintf("%d", a.Packets)
		if a.TruncatedAt > 0 {
			packets += " (truncated)"
		}
		p("| %s | %s | %s | %s | %d | %s | %s | %s | %s | %.4f | %.4f | %s |\n", mdCell(a.File), mdCell(a.What), mdCell(a.Attacker), packets, a.Flagged, ap, det,
			pct(a.TPR), pct(a.TPRAtTargetFPR), a.ROCAUC, a.PRAUC, first)
	}
	if len(r.Truncated) > 0 {
		p("\n## Truncated captures\n\n")
		p("Cut at the %s bound (--max-packets): only their first %s were scored, the rest of each file is not in the figures above.\n\n", u, u)
		for _, t := range r.Truncated {
			p("- %s (%s): truncated at %d %s\n", mdCell(t.File), t.Kind, t.At, u)
		}
	}
	p("\nROC plot: %s.\n", SVGFile)
	return ew.err
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, a ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, a...)
	}
}

// maxCurves is the most per-capture curves drawn; beyond it only the pooled
// curve is.
const maxCurves = 8

var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// WriteSVG writes the ROC plot: axes with ticks, the chance diagonal, the
// pooled curve and, for up to eight attack captures, one curve each, with the
// calibrated operating point marked.
func (r *Report) WriteSVG(w io.Writer) error {
	const (
		width, height = 640, 480
		left, top     = 60, 30
		plotW, plotH  = 360, 360
	)
	ew := &errWriter{w: w}
	p := ew.printf
	x := func(f float64) float64 { return left + f*plotW }
	y := func(t float64) float64 { return top + (1-t)*plotH }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="18" font-size="13">ROC: %s v%d (%s)</text>`+"\n", left, xmlEscape(r.Model.Name), r.Model.Version, xmlEscape(r.Model.FeatureSet))
	// Grid, ticks and labels.
	for i := 0; i <= 5; i++ {
		v := float64(i) / 5
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e0e0e0"/>`+"\n", x(v), y(0), x(v), y(1))
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e0e0e0"/>`+"\n", x(0), y(v), x(1), y(v))
		p(`<text x="%.1f" y="%.1f" text-anchor="middle">%.1f</text>`+"\n", x(v), y(0)+16, v)
		p(`<text x="%.1f" y="%.1f" text-anchor="end">%.1f</text>`+"\n", x(0)-6, y(v)+4, v)
	}
	p(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="black"/>`+"\n", left, top, plotW, plotH)
	p(`<text x="%.1f" y="%.1f" text-anchor="middle">false-positive rate (benign %s)</text>`+"\n", x(0.5), y(0)+34, r.Model.unit())
	p(`<text x="%.1f" y="%.1f" text-anchor="middle" transform="rotate(-90 %.1f %.1f)">true-positive rate (attack %s)</text>`+"\n", x(0)-40, y(0.5), x(0)-40, y(0.5), r.Model.unit())
	p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="gray" stroke-dasharray="4 4"/>`+"\n", x(0), y(0), x(1), y(1))
	poly := func(pts []Point, color string, wd float64) {
		var b strings.Builder
		for i, pt := range pts {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", x(pt.FPR), y(pt.TPR))
		}
		p(`<polyline fill="none" stroke="%s" stroke-width="%.1f" points="%s"/>`+"\n", color, wd, b.String())
	}
	type entry struct{ label, color string }
	var legend []entry
	var drawn []AttackResult
	for _, a := range r.Attacks {
		if a.curve != nil {
			drawn = append(drawn, a)
		}
	}
	if len(drawn) <= maxCurves {
		for i, a := range drawn {
			c := palette[i%len(palette)]
			poly(a.curve, c, 1.2)
			legend = append(legend, entry{fmt.Sprintf("%s (AUC %.3f)", shorten(a.File, 30), a.ROCAUC), c})
		}
	}
	if r.pooledCurve != nil {
		poly(r.pooledCurve, "black", 2.2)
		legend = append(legend, entry{fmt.Sprintf("pooled (AUC %.3f)", r.ROCAUC), "black"})
		p(`<circle cx="%.1f" cy="%.1f" r="4" fill="none" stroke="red" stroke-width="1.5"/>`+"\n", x(r.AtThreshold.FPR), y(r.AtThreshold.TPR))
		legend = append(legend, entry{"calibrated threshold (pooled)", "red"})
	}
	if len(drawn) > maxCurves {
		legend = append(legend, entry{fmt.Sprintf("%d captures: pooled curve only", len(drawn)), "white"})
	}
	for i, e := range legend {
		ly := float64(top + 10 + 16*i)
		p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", left+plotW+14, ly, left+plotW+34, ly, e.color)
		p(`<text x="%d" y="%.1f">%s</text>`+"\n", left+plotW+40, ly+4, xmlEscape(e.label))
	}
	p("</svg>\n")
	return ew.err
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "…" + string(r[len(r)-n+1:])
}

// xmlEscape escapes s for SVG text and attributes. Characters XML 1.0 does
// not allow (control characters other than tab, LF and CR; bytes that are
// not UTF-8, as in a Latin-1 file name) become U+FFFD: one of them would
// make the whole document ill-formed.
func xmlEscape(s string) string {
	s = strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\t' && r != '\n' && r != '\r') || r == 0xFFFE || r == 0xFFFF {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(s, string(utf8.RuneError)))
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
