// Package text is the agent demo's word counting: a second package apart from main, for -coverpkg.
package text

import "strings"

// Distinct counts the distinct words of s, ignoring case.
func Distinct(s string) int {
	seen := map[string]bool{}
	for _, word := range strings.Fields(s) {
		seen[strings.ToLower(word)] = true
	}
	return len(seen)
}
