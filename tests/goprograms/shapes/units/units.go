// Package units holds constants only: a package with no functions, which coverage lists with no statements.
package units

const (
	Metre      = 1.0
	Centimetre = Metre / 100
)
