// Command kubecover is a small HTTP server built the way Kubernetes builds its binaries for coverage
// (KUBE_BUILD_WITH_COVERAGE): as a test binary, `go test -c -covermode count`, whose TestMain (main_test.go)
// serves and rewrites a text coverage profile at KUBE_COVERAGE_FILE every KUBE_COVERAGE_FLUSH_INTERVAL.
//
// It prints "kubecover: serving on http://ADDRESS" on stdout. /hello greets, /sum?n=N adds 1..N, /words?text=T
// counts distinct words: each handler runs its own blocks.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

func main() {
	serve()
}

func serve() {
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", hello)
	mux.HandleFunc("/sum", sum)
	mux.HandleFunc("/words", words)
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubecover:", err)
		os.Exit(1)
	}
	fmt.Printf("kubecover: serving on http://%s\n", listener.Addr())
	http.Serve(listener, mux)
}

func hello(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		name = "world"
	}
	fmt.Fprintf(w, "hello, %s\n", name)
}

func sum(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil {
		http.Error(w, "n must be a number", http.StatusBadRequest)
		return
	}
	total := 0
	for i := 1; i <= n; i++ {
		total += i
	}
	fmt.Fprintf(w, "%d\n", total)
}

func words(w http.ResponseWriter, r *http.Request) {
	seen := map[string]bool{}
	for _, word := range strings.Fields(r.URL.Query().Get("text")) {
		seen[strings.ToLower(word)] = true
	}
	fmt.Fprintf(w, "%d\n", len(seen))
}
