// Command agentdemo is a small HTTP server for the coverage agent's tests (tests/test_cover_agent_go.py): each
// handler does different work, so each request leaves its own blocks in the counters.
//
//	agentdemo [-listen 127.0.0.1:0]
//
// It prints "agentdemo: serving on http://ADDRESS" on stdout and serves until it is stopped:
// /hello?name=N greets, /sum?n=N adds 1..N with package calc, /words?text=T counts distinct words with
// package text.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"

	"example.com/agentdemo/calc"
	"example.com/agentdemo/text"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", hello)
	mux.HandleFunc("/sum", sum)
	mux.HandleFunc("/words", words)
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentdemo:", err)
		os.Exit(1)
	}
	fmt.Printf("agentdemo: serving on http://%s\n", listener.Addr())
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
	fmt.Fprintf(w, "%d %s\n", calc.Sum(n), calc.Parity(n))
}

func words(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%d\n", text.Distinct(r.URL.Query().Get("text")))
}
