package sdk

import (
	"math"
	"reflect"
	"testing"
)

func TestTopContributions(t *testing.T) {
	names := []string{"a", "b", "c", "d", "e", "f"}
	nan := float32(math.NaN())
	for _, tc := range []struct {
		name string
		c    []float32
		k    int
		want []string
	}{
		{"largest first", []float32{0.1, 0.5, 0.3, 0.9, 0.2, 0.4}, 3, []string{"d", "b", "f"}},
		{"NaN counts as +Inf", []float32{0.1, nan, 0.3, 0.9, 0.2, 0.4}, 2, []string{"b", "d"}},
		{"ties keep the lower index first", []float32{0.5, 0.5, 0.5, 0.1, 0.1, 0.1}, 2, []string{"a", "b"}},
		{"k larger than the vector", []float32{0.2, 0.1}, 5, []string{"a", "b"}},
		{"k zero", []float32{0.2, 0.1}, 0, []string{}},
		{"negative k", []float32{0.2, 0.1}, -1, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := TopContributions(tc.c, names[:len(tc.c)], tc.k)
			gotNames := []string{}
			for _, g := range got {
				gotNames = append(gotNames, g.Name)
			}
			if !reflect.DeepEqual(gotNames, tc.want) {
				t.Fatalf("TopContributions(%v, %d) = %v, want %v", tc.c, tc.k, gotNames, tc.want)
			}
		})
	}
}
