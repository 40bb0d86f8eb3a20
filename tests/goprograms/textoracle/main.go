// Command textoracle merges Go text coverage profiles with Go's own parser and prints the result.
//
// The parser is golang.org/x/tools/cover, which `go tool cover` uses; the Go distribution vendors it under
// src/cmd/vendor, and the test copies that file to ./cover before building, so no module is downloaded.
//
// Usage: textoracle PROFILE... Each file must start with the same mode line; the files after the first are
// appended without it (as `go test` concatenates per-package profiles), and the parser merges repeated blocks.
package main

import (
	"bytes"
	"fmt"
	"os"

	"textoracle/cover"
)

func main() {
	var all bytes.Buffer
	mode := ""
	for _, name := range os.Args[1:] {
		data, err := os.ReadFile(name)
		if err != nil {
			fail(err)
		}
		first, rest, _ := bytes.Cut(data, []byte("\n"))
		if mode == "" {
			mode = string(first)
			all.WriteString(mode + "\n")
		} else if string(first) != mode {
			fail(fmt.Errorf("%s: %q differs from %q", name, first, mode))
		}
		all.Write(rest)
		if len(rest) > 0 && rest[len(rest)-1] != '\n' {
			all.WriteByte('\n')
		}
	}
	profiles, err := cover.ParseProfilesFromReader(&all)
	if err != nil {
		fail(err)
	}
	fmt.Println(mode)
	for _, p := range profiles {
		for _, b := range p.Blocks {
			fmt.Printf("%s:%d.%d,%d.%d %d %d\n", p.FileName, b.StartLine, b.StartCol, b.EndLine, b.EndCol, b.NumStmt, b.Count)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
