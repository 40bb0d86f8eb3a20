// Package geometry has branches, a switch and a function literal, so blocks run different numbers of times.
package geometry

import (
	"fmt"
	"math"
)

// Area of a shape given by kind and two sizes.
func Area(kind string, a, b float64) (float64, error) {
	if a < 0 || b < 0 {
		return 0, fmt.Errorf("negative size")
	}
	switch kind {
	case "square":
		return a * a, nil
	case "rect":
		return a * b, nil
	case "circle":
		return math.Pi * a * a, nil
	case "triangle":
		half := func(x float64) float64 { return x / 2 }
		return half(a * b), nil
	}
	return 0, fmt.Errorf("unknown shape %q", kind)
}

// Classify says how big a number is.
func Classify(n int) string {
	switch {
	case n < 0:
		return "negative"
	case n == 0:
		return "zero"
	case n < 10:
		return "small"
	}
	size := "large"
	for n >= 1000 {
		size = "very " + size
		n /= 1000
	}
	return size
}
