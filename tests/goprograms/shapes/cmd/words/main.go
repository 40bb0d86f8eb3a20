// Command words counts the words of its arguments and classifies the counts.
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"example.com/shapes/geometry"
	"example.com/shapes/textutil"
)

func main() {
	counts := textutil.Words(strings.Join(os.Args[1:], " "))
	words := make([]string, 0, len(counts))
	for w := range counts {
		words = append(words, w)
	}
	sort.Strings(words)
	for _, w := range words {
		fmt.Println(textutil.Reverse(w), counts[w], geometry.Classify(counts[w]))
	}
}
