// Package calc is the agent demo's arithmetic: a package apart from main, for -coverpkg.
package calc

// Sum adds 1..n; it is 0 for n < 1.
func Sum(n int) int {
	total := 0
	for i := 1; i <= n; i++ {
		total += i
	}
	return total
}

// Parity says whether n is even or odd.
func Parity(n int) string {
	if n%2 == 0 {
		return "even"
	}
	return "odd"
}
