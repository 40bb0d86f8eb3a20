package main

var alphaTotal int

// alpha runs straight-line code and one loop: every block in this file runs on each call.
func alpha() {
	alphaTotal++
	for i := 0; i < 3; i++ {
		alphaTotal += i
	}
}
