// Package textutil has loops, so counts grow with the input.
package textutil

import "strings"

// Words counts each word of s.
func Words(s string) map[string]int {
	counts := map[string]int{}
	for _, w := range strings.Fields(s) {
		w = strings.ToLower(w)
		if w == "" {
			continue
		}
		counts[w]++
	}
	return counts
}

// Reverse returns s backwards.
func Reverse(s string) string {
	r := []rune(s)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return string(r)
}

// Unused is never called, so its blocks stay at zero.
func Unused(s string) string {
	if s == "" {
		return "empty"
	}
	return s
}
