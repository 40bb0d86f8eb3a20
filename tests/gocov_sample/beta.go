package main

var betaEvens, betaOdds int

// beta counts evens and odds below n: its loop body runs n times, each branch about n/2 times.
func beta(n int) {
	for i := 0; i < n; i++ {
		if i%2 == 0 {
			betaEvens++
		} else {
			betaOdds++
		}
	}
}
