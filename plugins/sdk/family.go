package sdk

import (
	"strconv"
	"strings"
)

// FeatureFamily is the family of a feature set ("nethost/v6" → "nethost"):
// the versions of one family are successive definitions of one model input,
// and a plugin runs one model per family (a model of a newer version takes
// the place of the older one: the netflow plugin's host slot runs one of
// nethost/v1..v7).
func FeatureFamily(set string) string {
	f, _, _ := strings.Cut(set, "/")
	return f
}

// FeatureVersion is the version of a feature set ("nethost/v6" → 6), 0 if
// its name carries none.
func FeatureVersion(set string) int {
	_, v, ok := strings.Cut(set, "/v")
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return n
}
