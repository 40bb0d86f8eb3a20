// Command covsample is a long-running program for auditcov's per-test coverage tests.
//
// It reads one command per line on stdin and answers "ok" (or "error: ...") on stdout once the command is done,
// so a test knows when a code path has finished. Commands: "alpha", "beta N", "gamma WORD" run three distinct
// code paths (one file each); "snap DIR" writes the coverage meta-data and the current counters into DIR
// (needs -covermode=atomic); "quit" (or the end of input) exits.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime/coverage"
	"strconv"
	"strings"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		command, argument, _ := strings.Cut(in.Text(), " ")
		if command == "quit" {
			return
		}
		if err := run(command, argument); err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println("ok")
	}
}

func run(command, argument string) error {
	switch command {
	case "alpha":
		alpha()
	case "beta":
		n, err := strconv.Atoi(argument)
		if err != nil {
			return err
		}
		beta(n)
	case "gamma":
		gamma(argument)
	case "snap":
		return snap(argument)
	default:
		return fmt.Errorf("unknown command %q", command)
	}
	return nil
}

func snap(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := coverage.WriteMetaDir(dir); err != nil {
		return err
	}
	return coverage.WriteCountersDir(dir)
}
