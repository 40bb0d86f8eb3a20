// Command snapshot writes its own coverage while it runs, as a long-running server would between tests:
// snapshot DIR N writes the meta-data and the counters to DIR after classifying 0..N-1, clears the counters,
// classifies once more and writes them again (runtime/coverage needs -covermode=atomic for this).
package main

import (
	"fmt"
	"os"
	"runtime/coverage"
	"strconv"

	"example.com/shapes/geometry"
)

func main() {
	dir := os.Args[1]
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Println("bad count:", os.Args[2])
		os.Exit(2)
	}
	for i := 0; i < n; i++ {
		geometry.Classify(i * 1000)
	}
	must(coverage.WriteMetaDir(dir))
	must(coverage.WriteCountersDir(dir))
	must(coverage.ClearCounters())
	geometry.Classify(-1)
	must(coverage.WriteCountersDir(dir))
}

func must(err error) {
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}
