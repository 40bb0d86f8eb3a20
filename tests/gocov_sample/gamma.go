package main

var gammaLong, gammaShort int

// gamma takes one of two branches by the length of word.
func gamma(word string) {
	if len(word) > 3 {
		gammaLong++
		return
	}
	gammaShort++
}
