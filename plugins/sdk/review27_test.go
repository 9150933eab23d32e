package sdk

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestCheckResult: what a plugin (compromised by the records it parses)
// sends about a batch was taken as it came, apart from indexes outside the
// batch, which the agent dropped without counting them. The same record
// reported twice became two anomalies (counted twice, and in the file
// pipeline two events towards a burst); an aggregate could stand for 2^62
// records of a 4-record batch, wrapping the agent's anomaly counters and
// giving a finding a packet count no capture had; a statistics' anomaly
// count could exceed the batch. CheckResult drops or clamps each, and says
// how many.
func TestCheckResult(t *testing.T) {
	const start, end = 100, 104
	an := func(i uint64) Anomaly { return Anomaly{Index: i, Score: 2, Threshold: 1} }
	agg := func(i, count uint64) Anomaly {
		a := an(i)
		a.Aggregate = &Aggregate{Count: count, TCPSyn: count, UDP: 1}
		return a
	}
	features := func(n int) []Contribution {
		c := make([]Contribution, n)
		for i := range c {
			c[i] = Contribution{Name: fmt.Sprint("f", i), Contribution: 1}
		}
		return c
	}
	for _, tc := range []struct {
		name    string
		in      []Anomaly
		want    []Anomaly
		refused uint64
	}{
		{"consistent", []Anomaly{an(100), agg(101, 2), an(103)}, []Anomaly{an(100), agg(101, 2), an(103)}, 0},
		{"out of the batch", []Anomaly{an(99), an(100), an(104), an(1 << 63)}, []Anomaly{an(100)}, 3},
		{"duplicate in order", []Anomaly{an(100), an(100), an(101)}, []Anomaly{an(100), an(101)}, 1},
		{"duplicate out of order", []Anomaly{an(102), an(100), an(102), an(100), an(101)}, []Anomaly{an(102), an(100), an(101)}, 2},
		{"aggregate beyond the batch", []Anomaly{an(100), agg(101, 1<<62)}, []Anomaly{an(100), agg(101, 3)}, 1},
		{"aggregates beyond the batch together", []Anomaly{agg(100, 3), agg(101, 3), an(102)}, []Anomaly{agg(100, 3), agg(101, 1)}, 2},
		{"kinds beyond the records", []Anomaly{{Index: 100, Aggregate: &Aggregate{Count: 2, UDP: 5, ARP: 9}}},
			[]Anomaly{{Index: 100, Aggregate: &Aggregate{Count: 2, UDP: 2, ARP: 2}}}, 1},
		{"context beyond its bounds", []Anomaly{{Index: 100, Context: map[string]string{
			ContextSrcIP: strings.Repeat("1", MaxContextShort+1), ContextPath: strings.Repeat("p", MaxContextValue),
			"old_path": strings.Repeat("p", MaxContextValue+1), strings.Repeat("k", MaxContextKey+1): "v", ContextDstIP: "10.0.0.1"}}},
			[]Anomaly{{Index: 100, Context: map[string]string{ContextPath: strings.Repeat("p", MaxContextValue), ContextDstIP: "10.0.0.1"}}}, 1},
		{"too many top features", []Anomaly{{Index: 100, TopFeatures: features(MaxTopContributions + 5)}},
			[]Anomaly{{Index: 100, TopFeatures: features(MaxTopContributions)}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := Stats{Count: 1 << 40, Anomalies: 1 << 40}
			got, refused := CheckResult(&st, tc.in, start, end)
			if !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("anomalies\n got %+v\nwant %+v", got, tc.want)
			}
			if refused != tc.refused {
				t.Errorf("refused %d, want %d", refused, tc.refused)
			}
			if st.Count != end-start || st.Anomalies != end-start {
				t.Errorf("stats count %d anomalies %d, want at most %d", st.Count, st.Anomalies, end-start)
			}
			if n := CountRecords(got); n > end-start {
				t.Errorf("%d anomalous records in a batch of %d", n, end-start)
			}
		})
	}
}
