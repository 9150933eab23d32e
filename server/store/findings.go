package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Finding is a stored finding. The JSON names are the ones of DESIGN.md
// section 11 (the API, `vigilctl findings list --json` and the exports use
// them), plus seq, packets, bytes, lead_in and received_at.
type Finding struct {
	ID          int64                 `json:"id"`
	AgentID     string                `json:"agent_id"`
	Entity      string                `json:"entity"`
	Seq         uint64                `json:"seq"`
	Detector    string                `json:"detector"`
	Time        time.Time             `json:"time"`
	FirstSeen   time.Time             `json:"first_seen"`
	LastSeen    time.Time             `json:"last_seen"`
	Count       uint64                `json:"count"`
	Severity    string                `json:"severity"`
	Score       float64               `json:"score"`
	Threshold   float64               `json:"threshold"`
	Model       ModelRef              `json:"model"`
	Context     FindingContext        `json:"context"`
	TopFeatures []FeatureContribution `json:"top_features"`
	Summary     string                `json:"summary"`
	Packets     uint64                `json:"packets,omitempty"`
	Bytes       uint64                `json:"bytes,omitempty"`
	LeadIn      *LeadIn               `json:"lead_in,omitempty"`
	ReceivedAt  time.Time             `json:"received_at"`
	Status      string                `json:"status"`             // triage: new, acknowledged, false_positive, resolved
	Assignee    string                `json:"assignee,omitempty"` // triage
}

// LeadIn is the traffic a finding's source sent in the seconds before its
// first anomalous packet (wire Finding.lead_in_*), since Since: where the
// source's activity began, as the detector saw it.
type LeadIn struct {
	Since   time.Time `json:"since"`
	Packets uint64    `json:"packets"`
	Bytes   uint64    `json:"bytes"`
}

// FindingContext is where a finding happened (network or file).
type FindingContext struct {
	SrcIP   string `json:"src_ip,omitempty"`
	DstIP   string `json:"dst_ip,omitempty"`
	SrcPort uint32 `json:"src_port,omitempty"`
	DstPort uint32 `json:"dst_port,omitempty"`
	Proto   string `json:"proto,omitempty"`
	Path    string `json:"path,omitempty"`
	SrcMAC  string `json:"src_mac,omitempty"`
}

// FeatureContribution is one feature's share of a finding's score.
type FeatureContribution struct {
	Name         string  `json:"name"`
	Contribution float64 `json:"contribution"`
}

// Severity names, lowest first; the index is the stored value
// (wirev1.Severity).
var severityNames = []string{"unspecified", "low", "medium", "high", "critical"}

// SeverityName returns the name of a wire severity.
func SeverityName(s wirev1.Severity) string {
	if int(s) >= 0 && int(s) < len(severityNames) {
		return severityNames[s]
	}
	return severityNames[0]
}

// ParseSeverity parses "low", "medium", "high" or "critical".
func ParseSeverity(s string) (wirev1.Severity, error) {
	for i, n := range severityNames {
		if i > 0 && strings.EqualFold(s, n) {
			return wirev1.Severity(i), nil
		}
	}
	return 0, fmt.Errorf("severity %q (want low, medium, high or critical): %w", s, ErrInvalid)
}

// FindingFilter selects findings. Results are newest first (descending id);
// to page, pass the last id seen as BeforeID.
type FindingFilter struct {
	Entity      string
	AgentID     string
	Detector    string
	Since       time.Time       // finding time >= Since
	Until       time.Time       // finding time < Until
	MinSeverity wirev1.Severity // severity >= MinSeverity
	Status      string          // triage status ("" = any)
	BeforeID    int64           // cursor: id < BeforeID (0 = newest)
	// AfterID, when > 0, selects id > AfterID and reverses the order
	// (oldest first), as does Ascending: the live stream and the
	// forwarders follow new findings with them.
	AfterID   int64
	Ascending bool
	Limit     int // default 100, at most 1000
}

// findingRowCols are the columns an INSERT binds per row (agent_id, entity
// and received_at are shared by the statement's rows): the ones queries
// filter on, and the rest as one detail blob (detail.go). The old detail
// columns keep their defaults in rows stored since migration 5.
const findingRowCols = `seq, detector, time, severity, detail`

// An INSERT's values: agent_id, entity and received_at are shared by every
// row of a statement (parameters ?1, ?2, ?3, bound once instead of once per
// row: binding is a large part of the insert's cost), the other
// rowInsertArgs columns are bound per row.
const (
	sharedInsertArgs = 3
	rowInsertArgs    = 5
)

// insertChunk is how many rows one multi-row INSERT carries at most: fewer
// statement executions per batch (3 + 5*32 = 163 parameters, well under
// SQLite's limit).
const insertChunk = 32

// insertFindingsSQL returns INSERT OR IGNORE for n rows: ?1 agent_id, ?2
// entity, ?3 received_at in every row, then rowInsertArgs anonymous
// parameters per row (numbered from 4 on by SQLite). Only the shared three
// are numbered: modernc.org/sqlite looks up every parameter's name, which is
// a linear search per numbered parameter.
func insertFindingsSQL(n int) string {
	row := "(?1, ?2, ?3" + strings.Repeat(", ?", rowInsertArgs) + ")"
	var b strings.Builder
	b.WriteString("INSERT OR IGNORE INTO findings(agent_id, entity, received_at, " + findingRowCols + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	return b.String()
}

func finiteOr0(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

const findingCols = `id, agent_id, entity, seq, detector, time, first_seen, last_seen, count, severity, score, threshold,
	model_name, model_version, model_digest, src_ip, dst_ip, src_port, dst_port, proto, path, src_mac,
	packets, bytes, top_features, summary, received_at, status, assignee, detail`

func scanFinding(sc interface{ Scan(...any) error }) (Finding, error) {
	var (
		f                        Finding
		seq, count, mver, pk, by int64
		t, received              int64
		first, last              sql.NullInt64
		sev                      int64
		sport, dport             int64
		tf                       string
		detail                   []byte
	)
	err := sc.Scan(&f.ID, &f.AgentID, &f.Entity, &seq, &f.Detector, &t, &first, &last, &count, &sev, &f.Score, &f.Threshold,
		&f.Model.Name, &mver, &f.Model.Digest, &f.Context.SrcIP, &f.Context.DstIP, &sport, &dport, &f.Context.Proto,
		&f.Context.Path, &f.Context.SrcMAC, &pk, &by, &tf, &f.Summary, &received, &f.Status, &f.Assignee, &detail)
	if err != nil {
		return f, err
	}
	f.Seq, f.Count, f.Model.Version, f.Packets, f.Bytes = uint64(seq), uint64(count), uint64(mver), uint64(pk), uint64(by)
	f.Context.SrcPort, f.Context.DstPort = uint32(sport), uint32(dport)
	f.Severity = SeverityName(wirev1.Severity(sev))
	f.Time, f.ReceivedAt = time.Unix(0, t).UTC(), time.Unix(0, received).UTC()
	if detail != nil { // stored since migration 5
		return f, decodeDetail(&f, detail)
	}
	f.FirstSeen, f.LastSeen = fromNanos(first), fromNanos(last)
	f.TopFeatures = []FeatureContribution{}
	if tf != "" {
		if err := json.Unmarshal([]byte(tf), &f.TopFeatures); err != nil {
			return f, fmt.Errorf("finding %d top_features: %w", f.ID, err)
		}
	}
	return f, nil
}

// ListFindings returns the findings that match f, newest first.
func (db *DB) ListFindings(ctx context.Context, f FindingFilter) ([]Finding, error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) { where = append(where, cond); args = append(args, v) }
	if f.Entity != "" {
		add("entity = ?", f.Entity)
	}
	if f.AgentID != "" {
		add("agent_id = ?", f.AgentID)
	}
	if f.Detector != "" {
		add("detector = ?", f.Detector)
	}
	if !f.Since.IsZero() {
		add("time >= ?", f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		add("time < ?", f.Until.UnixNano())
	}
	if f.MinSeverity > 0 {
		add("severity >= ?", int64(f.MinSeverity))
	}
	if f.Status != "" {
		add("status = ?", f.Status)
	}
	if f.BeforeID > 0 {
		add("id < ?", f.BeforeID)
	}
	order := " ORDER BY id DESC LIMIT ?"
	if f.AfterID > 0 {
		add("id > ?", f.AfterID)
	}
	if f.AfterID > 0 || f.Ascending {
		order = " ORDER BY id ASC LIMIT ?"
	}
	// Late row lookup: the subquery picks the ids (from an index alone
	// where the filters allow, and a sort of ids, not of whole rows, when
	// the chosen index is not in id order, e.g. a time window), then only
	// those rows are read. Over 10 million findings this took a time
	// window's list from ~100 ms to ~10 ms (docs/benchmarks.md).
	inner := `SELECT id FROM findings`
	if len(where) > 0 {
		inner += " WHERE " + strings.Join(where, " AND ")
	}
	inner += order
	q := `SELECT ` + findingCols + ` FROM findings WHERE id IN (` + inner + `)` + strings.TrimSuffix(order, " LIMIT ?")
	args = append(args, clampLimit(f.Limit))
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list findings: %w", err)
	}
	defer rows.Close()
	out := []Finding{}
	for rows.Next() {
		fi, err := scanFinding(rows)
		if err != nil {
			return nil, fmt.Errorf("list findings: %w", err)
		}
		out = append(out, fi)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list findings: %w", err)
	}
	return out, nil
}

// GetFinding returns one finding; unknown ids wrap ErrNotFound.
func (db *DB) GetFinding(ctx context.Context, id int64) (Finding, error) {
	f, err := scanFinding(db.r.QueryRowContext(ctx, `SELECT `+findingCols+` FROM findings WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return f, fmt.Errorf("finding %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return f, fmt.Errorf("get finding %d: %w", id, err)
	}
	return f, nil
}

// CountFindings returns how many findings of the agent are stored ("" = all).
func (db *DB) CountFindings(ctx context.Context, agentID string) (int, error) {
	var n int
	var err error
	if agentID == "" {
		err = db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM findings`).Scan(&n)
	} else {
		err = db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM findings WHERE agent_id = ?`, agentID).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("count findings: %w", err)
	}
	return n, nil
}
