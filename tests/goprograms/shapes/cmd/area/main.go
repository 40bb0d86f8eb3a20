// Command area prints the area of each shape named on the command line: area square 2 circle 1 ...
package main

import (
	"fmt"
	"os"
	"strconv"

	"example.com/shapes/geometry"
	"example.com/shapes/units"
)

func main() {
	args := os.Args[1:]
	for len(args) >= 2 {
		size, err := strconv.ParseFloat(args[1], 64)
		if err != nil {
			fmt.Println("bad size:", args[1])
			os.Exit(2)
		}
		area, err := geometry.Area(args[0], size*units.Metre, 2)
		if err != nil {
			fmt.Println("error:", err)
		} else {
			fmt.Printf("%s %.2f %s\n", args[0], area, geometry.Classify(int(area)))
		}
		args = args[2:]
	}
}
