package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// pathID parses the {id} path value as a positive integer; anything else is
// a 404 (an id that cannot exist).
func pathID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		return 0, errNotFound
	}
	return id, nil
}

// findingDetail is one finding in full: the finding, why it was raised,
// where its model came from, and its triage history.
type findingDetail struct {
	store.Finding
	Explanation explanation         `json:"explanation"`
	Provenance  provenance          `json:"provenance"`
	Notes       []store.FindingNote `json:"notes"`
}

type explanation struct {
	// Ratio is score / threshold (how far above its threshold the model
	// scored the behaviour); 0 when the threshold is 0.
	Ratio float64 `json:"ratio"`
	// TopFeatures sorted by contribution, largest first.
	TopFeatures []store.FeatureContribution `json:"top_features"`
	Text        string                      `json:"text"`
}

func explain(f store.Finding) explanation {
	e := explanation{TopFeatures: slices.Clone(f.TopFeatures)}
	slices.SortStableFunc(e.TopFeatures, func(a, b store.FeatureContribution) int {
		switch {
		case a.Contribution > b.Contribution:
			return -1
		case a.Contribution < b.Contribution:
			return 1
		}
		return 0
	})
	if f.Threshold > 0 {
		// Both are finite, the quotient need not be (1e308 / 1e-10), and
		// JSON has no +Inf: capped.
		e.Ratio = max(-math.MaxFloat64, min(f.Score/f.Threshold, math.MaxFloat64))
	}
	var b strings.Builder
	b.WriteString("The ")
	b.WriteString(f.Detector)
	b.WriteString(" detector scored this behaviour ")
	b.WriteString(strconv.FormatFloat(f.Score, 'g', 4, 64))
	if f.Threshold > 0 {
		b.WriteString(" against a threshold of ")
		b.WriteString(strconv.FormatFloat(f.Threshold, 'g', 4, 64))
		ratio := strconv.FormatFloat(e.Ratio, 'f', 1, 64)
		if math.Abs(e.Ratio) >= 1e6 {
			ratio = strconv.FormatFloat(e.Ratio, 'g', 4, 64)
		}
		b.WriteString(" (" + ratio + "×)")
	}
	if len(e.TopFeatures) > 0 {
		b.WriteString("; the largest contribution came from ")
		b.WriteString(e.TopFeatures[0].Name)
	}
	b.WriteString(".")
	e.Text = b.String()
	return e
}

// provenance is where the model that raised a finding came from. The
// finding names the model; the registry, when it holds that digest, adds who
// signed and published it.
type provenance struct {
	Model       store.ModelRef `json:"model"`
	InRegistry  bool           `json:"in_registry"`
	Signers     any            `json:"signers,omitempty"`
	PublishedBy string         `json:"published_by,omitempty"`
	PublishedAt time.Time      `json:"published_at,omitzero"`
	AgentID     string         `json:"agent_id"`
	Seq         uint64         `json:"seq"`
	ReceivedAt  time.Time      `json:"received_at"`
}

func (s *server) provenance(ctx context.Context, f store.Finding) provenance {
	pv := provenance{Model: f.Model, AgentID: f.AgentID, Seq: f.Seq, ReceivedAt: f.ReceivedAt}
	if f.Model.Digest == "" {
		return pv
	}
	m, err := s.db.ModelByDigest(ctx, f.Model.Digest)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("model provenance lookup", "digest", f.Model.Digest, "err", err)
		}
		return pv
	}
	pv.InRegistry, pv.Signers, pv.PublishedBy, pv.PublishedAt = true, m.Signers, m.PublishedBy, m.CreatedAt
	return pv
}

// triageReq is the body of POST /findings/{id}/triage. Absent fields are
// left unchanged.
type triageReq struct {
	Status   *string `json:"status,omitempty"`
	Assignee *string `json:"assignee,omitempty"`
	Comment  string  `json:"comment,omitempty"`
}

func (req triageReq) validate() error {
	if req.Status == nil && req.Assignee == nil && req.Comment == "" {
		return errorf(http.StatusBadRequest, "nothing to change: give status, assignee or comment")
	}
	if req.Status != nil && !store.ValidStatus(*req.Status) {
		return errorf(http.StatusBadRequest, "invalid status %q (new, acknowledged, false_positive or resolved)", *req.Status)
	}
	if req.Assignee != nil && len(*req.Assignee) > store.MaxAssigneeLen {
		return errorf(http.StatusBadRequest, "assignee longer than %d bytes", store.MaxAssigneeLen)
	}
	if len(req.Comment) > store.MaxCommentLen {
		return errorf(http.StatusBadRequest, "comment longer than %d bytes", store.MaxCommentLen)
	}
	return nil
}

func (s *server) triageFinding(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	var req triageReq
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	// Scope first: a finding of another entity is "not found", whatever
	// the body says.
	before, err := s.findingInScope(r.Context(), p, id)
	if err != nil {
		return err
	}
	f, err := s.db.TriageFinding(r.Context(), id, store.Triage{Status: req.Status, Assignee: req.Assignee, Comment: req.Comment}, p.actor())
	if err != nil {
		return err
	}
	// Into or out of false_positive: the entity's suppressions changed.
	if (before.Status == store.StatusFalsePositive) != (f.Status == store.StatusFalsePositive) {
		s.suppressionsChanged(f.Entity)
	}
	writeJSON(w, http.StatusOK, f)
	return nil
}

// ---- suppressions ----

func (s *server) listSuppressions(w http.ResponseWriter, r *http.Request, p *principal) error {
	q, err := query(r, "entity", "active", "limit", "cursor")
	if err != nil {
		return err
	}
	f := store.SuppressionFilter{}
	if f.Entity, err = p.entityFilter(q.Get("entity")); err != nil {
		return err
	}
	switch q.Get("active") {
	case "", "true", "1":
		f.Active = true
	case "false", "0", "all":
	default:
		return errorf(http.StatusBadRequest, "invalid active %q (true or false)", q.Get("active"))
	}
	if f.Limit, err = parseLimit(q.Get("limit")); err != nil {
		return err
	}
	if f.BeforeID, err = parseCursor(q.Get("cursor")); err != nil {
		return err
	}
	sups, err := s.db.ListSuppressions(r.Context(), f)
	if err != nil {
		return err
	}
	resp := map[string]any{"suppressions": sups}
	if len(sups) > 0 && (f.Limit == 0 && len(sups) == 100 || len(sups) == f.Limit) {
		resp["next_cursor"] = strconv.FormatInt(sups[len(sups)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *server) liftSuppression(w http.ResponseWriter, r *http.Request, p *principal) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	sup, err := s.db.GetSuppression(r.Context(), id)
	if err != nil {
		return err
	}
	if !p.sees(sup.Entity) {
		return errNotFound
	}
	wasActive := sup.LiftedAt.IsZero()
	if err := s.db.LiftSuppression(r.Context(), id, p.actor()); err != nil {
		return err
	}
	if wasActive {
		s.suppressionsChanged(sup.Entity)
	}
	sup, err = s.db.GetSuppression(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sup)
	return nil
}

func (s *server) suppressionsChanged(entity string) {
	if s.opts.OnSuppressionsChanged != nil {
		s.opts.OnSuppressionsChanged(entity)
	}
}

// ---- stats, entities, models, rollouts ----

// parseBucket accepts a Go duration of whole seconds, at least one (the
// answer gives the width as bucket_seconds).
func parseBucket(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second || d%time.Second != 0 {
		return 0, errorf(http.StatusBadRequest, "invalid bucket %q (whole seconds, at least 1s, such as 1h)", v)
	}
	return d, nil
}

func (s *server) findingStats(w http.ResponseWriter, r *http.Request, p *principal) error {
	q, err := query(r, "entity", "since", "until", "bucket")
	if err != nil {
		return err
	}
	now := time.Now()
	f := store.StatsFilter{}
	if f.Entity, err = p.entityFilter(q.Get("entity")); err != nil {
		return err
	}
	if f.Since, err = parseTime("since", q.Get("since"), now); err != nil {
		return err
	}
	if f.Until, err = parseTime("until", q.Get("until"), now); err != nil {
		return err
	}
	if f.Bucket, err = parseBucket(q.Get("bucket")); err != nil {
		return err
	}
	if f.Until.IsZero() {
		f.Until = now
	}
	if f.Since.IsZero() {
		f.Since = f.Until.Add(-24 * time.Hour)
	}
	if f.Bucket == 0 {
		f.Bucket = max(time.Minute, f.Until.Sub(f.Since)/48).Truncate(time.Second)
	}
	if !f.Until.After(f.Since) || f.Until.Sub(f.Since)/f.Bucket > store.MaxStatsBuckets {
		return errorf(http.StatusBadRequest, "since must be before until, with at most %d buckets", store.MaxStatsBuckets)
	}
	// Align the window to the bucket so that charts do not jitter.
	f.Since = f.Since.Truncate(f.Bucket)
	if !storable(f.Since) {
		return errorf(http.StatusBadRequest, "since out of range once aligned to the bucket")
	}
	buckets, err := s.db.FindingStats(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"since": f.Since.UTC(), "until": f.Until.UTC(),
		"bucket_seconds": int64(f.Bucket / time.Second), "buckets": buckets})
	return nil
}

func (s *server) listEntities(w http.ResponseWriter, r *http.Request, p *principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	if e := p.scopeEntity(); e != "" {
		writeJSON(w, http.StatusOK, map[string]any{"entities": []string{e}})
		return nil
	}
	es, err := s.db.ListEntities(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"entities": es})
	return nil
}

// listModels: the registry is deployment-wide (every entity's agents run the
// same released models), so every reader sees it.
func (s *server) listModels(w http.ResponseWriter, r *http.Request, _ *principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	ms, err := s.db.ListModels(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": ms})
	return nil
}

// listRollouts: an entity-admin sees its entity's rollouts and the
// deployment-wide ones, with progress counted over its own agents only and
// the targets of deployment-wide rollouts (which may name other entities'
// agents) left out.
func (s *server) listRollouts(w http.ResponseWriter, r *http.Request, p *principal) error {
	q, err := query(r, "entity")
	if err != nil {
		return err
	}
	entity, err := p.entityFilter(q.Get("entity"))
	if err != nil {
		return err
	}
	rs, err := s.db.ListRollouts(r.Context(), store.RolloutFilter{Entity: entity})
	if err != nil {
		return err
	}
	if p.scopeEntity() != "" {
		for i := range rs {
			if rs[i].Entity != p.scopeEntity() {
				rs[i].Target = nil
				rs[i].CreatedBy = ""
				rs[i].StateChangedBy = ""
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"rollouts": rs})
	return nil
}

// ---- users ----

func (s *server) setUserDisabled(w http.ResponseWriter, r *http.Request, p *principal, disabled bool) error {
	id := r.PathValue("id")
	if !strings.HasPrefix(id, "u-") || len(id) > 64 {
		return errNotFound
	}
	if disabled && id == p.user.ID {
		return errorf(http.StatusBadRequest, "you cannot disable yourself")
	}
	if err := s.db.SetUserDisabled(r.Context(), id, disabled, p.actor()); err != nil {
		return err
	}
	u, err := s.db.GetUser(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (s *server) disableUser(w http.ResponseWriter, r *http.Request, p *principal) error {
	return s.setUserDisabled(w, r, p, true)
}

func (s *server) enableUser(w http.ResponseWriter, r *http.Request, p *principal) error {
	return s.setUserDisabled(w, r, p, false)
}

// ---- audit ----

type verifyResp struct {
	OK      bool   `json:"ok"`
	Checked int    `json:"checked"`
	Error   string `json:"error,omitempty"`
}

// verifyAudit walks the whole hash chain. A broken chain is a 200 with
// ok=false (the request worked; the log did not).
func (s *server) verifyAudit(w http.ResponseWriter, r *http.Request, _ *principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	n, err := s.db.VerifyAudit(r.Context())
	if err != nil {
		if !errors.Is(err, store.ErrAuditTampered) {
			return err
		}
		s.log.Error("audit log chain broken", "checked", n, "err", err)
		writeJSON(w, http.StatusOK, verifyResp{OK: false, Checked: n, Error: err.Error()})
		return nil
	}
	writeJSON(w, http.StatusOK, verifyResp{OK: true, Checked: n})
	return nil
}
