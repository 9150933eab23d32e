package api

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestTimeFilterOutsideNanosRange: a since or until the store cannot hold as
// Unix nanoseconds (before 1678 or after 2262) wrapped around in
// time.UnixNano, so until=9999-12-31T00:00:00Z listed nothing and
// since=3000-01-01T00:00:00Z listed every finding. Such a time must be
// refused (400), never silently turned into another filter.
func TestTimeFilterOutsideNanosRange(t *testing.T) {
	fx := newFixture(t)
	for _, q := range []string{
		"until=9999-12-31T00:00:00Z",
		"since=3000-01-01T00:00:00Z",
		"since=1000-01-01T00:00:00Z",
		"until=2300-01-01T00:00:00Z",
	} {
		for _, path := range []string{"/api/v1/findings?", "/api/v1/findings/export?", "/api/v1/findings/stats?"} {
			code, body := fx.do(t, "admin", http.MethodGet, path+q, "")
			if code == http.StatusOK && path == "/api/v1/findings?" {
				var resp struct {
					Findings []json.RawMessage `json:"findings"`
				}
				_ = json.Unmarshal([]byte(body), &resp)
				t.Errorf("GET %s%s: 200 with %d findings, want 400", path, url.QueryEscape(q), len(resp.Findings))
				continue
			}
			if code != http.StatusBadRequest {
				t.Errorf("GET %s%s: %d %.200s, want 400", path, q, code, body)
			}
		}
	}
	// Times in range still work.
	if code, body := fx.do(t, "admin", http.MethodGet, "/api/v1/findings?until=2200-01-01T00:00:00Z&since=1700-01-01T00:00:00Z", ""); code != http.StatusOK {
		t.Errorf("in-range window: %d %s", code, body)
	}
}

// TestStatsBucketWholeSeconds: a bucket of 1500ms was accepted and counted in
// buckets 1.5 s apart, while the answer said bucket_seconds 1 (an integer in
// the OpenAPI description): a chart drawn from it put the counts at the
// wrong times. A bucket must be a whole number of seconds.
func TestStatsBucketWholeSeconds(t *testing.T) {
	fx := newFixture(t)
	code, body := fx.do(t, "admin", http.MethodGet, "/api/v1/findings/stats?since=10m&bucket=1500ms", "")
	if code == http.StatusOK {
		var resp struct {
			BucketSeconds int64 `json:"bucket_seconds"`
			Buckets       []struct {
				Start string `json:"start"`
			} `json:"buckets"`
		}
		_ = json.Unmarshal([]byte(body), &resp)
		t.Errorf("bucket=1500ms: 200 with bucket_seconds %d, want 400", resp.BucketSeconds)
	}
	if code, body := fx.do(t, "admin", http.MethodGet, "/api/v1/findings/stats?since=1h&bucket=90s", ""); code != http.StatusOK ||
		!strings.Contains(body, `"bucket_seconds":90`) {
		t.Errorf("bucket=90s: %d %s", code, body)
	}
}

// TestFindingDetailHugeRatio: the endpoint accepts any finite score and
// threshold, but score/threshold can still overflow to +Inf (1e308 over
// 1e-10), and encoding/json refuses +Inf: GET /findings/{id} answered 200
// with an empty body, so the finding could not be opened. The ratio is
// capped at the largest float64.
func TestFindingDetailHugeRatio(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	if _, err := fx.db.InsertFindings(ctx, "a-2", "acme", []*wirev1.Finding{{Seq: 1, Detector: "netflow",
		TimeUnixNano: time.Now().UnixNano(), Severity: wirev1.Severity_SEVERITY_CRITICAL, Score: 1e308, Threshold: 1e-10}}); err != nil {
		t.Fatal(err)
	}
	fs, err := fx.db.ListFindings(ctx, store.FindingFilter{AgentID: "a-2", Limit: 1})
	if err != nil || len(fs) != 1 {
		t.Fatalf("%v %v", fs, err)
	}
	code, body := fx.do(t, "admin", http.MethodGet, fmt.Sprintf("/api/v1/findings/%d", fs[0].ID), "")
	var d struct {
		ID          int64 `json:"id"`
		Explanation struct {
			Ratio float64 `json:"ratio"`
			Text  string  `json:"text"`
		} `json:"explanation"`
	}
	if err := json.Unmarshal([]byte(body), &d); code != http.StatusOK || err != nil || d.ID != fs[0].ID {
		t.Fatalf("GET finding: %d %q (%v)", code, body, err)
	}
	if d.Explanation.Ratio != math.MaxFloat64 || strings.Contains(d.Explanation.Text, "Inf") {
		t.Errorf("explanation %+v", d.Explanation)
	}
}
