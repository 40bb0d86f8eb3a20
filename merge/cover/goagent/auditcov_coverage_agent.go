// auditcov coverage agent: serves this program's Go code coverage over HTTP while it runs.
//
// `auditcov cover build` adds this file to a main package with `go build -overlay` and builds the program with
// `-cover -covermode=atomic`: nothing in the package's source or go.mod changes. Standard library only. It does
// nothing unless AUDITCOV_AGENT is set. Environment:
//
//	AUDITCOV_AGENT                where to listen: 127.0.0.1:PORT, 127.0.0.1:0 (any free port), [::1]:PORT or
//	                              unix:/path/to.sock; another host only with AUDITCOV_AGENT_ALLOW_REMOTE=1,
//	                              since the agent exposes process internals
//	AUDITCOV_AGENT_TOKEN_FILE     optional: require "Authorization: Bearer <token>" on all but /v1/health
//	AUDITCOV_SINK                 optional: the sink's base URL, to register with (AUDITCOV_SINK_CA: a PEM CA
//	                              file for https; AUDITCOV_SINK_CERT and AUDITCOV_SINK_KEY: a client
//	                              certificate and its key, for a sink that requires them)
//	AUDITCOV_RUN                  the run to register in (default "default")
//	AUDITCOV_PROCESS              the name to register under (default: the program's base name)
//	AUDITCOV_TOKEN_FILE           the sink's ingest token, sent with the registration
//
// HTTP API:
//
//	GET  /v1/health    200 {"process": NAME, "pid": N, "kind": "go", "mode": "atomic"}
//	GET  /v1/meta      the bytes runtime/coverage.WriteMeta writes (a covmeta file)
//	GET  /v1/counters  the bytes runtime/coverage.WriteCounters writes (a covcounters file)
//	POST /v1/clear     runtime/coverage.ClearCounters(), 200 {"cleared": true}
//
// Errors are JSON {"error": "..."}: 401 bad token, 404 unknown path, 405 wrong method, 500 write failed.
//
// Registration: POST {AUDITCOV_SINK}/v1/runs/{run}/agents with {"process", "kind": "go", "address", "pid",
// "token" (the agent token, when there is one)}, from a background goroutine, retried (0.5 s doubling to 10 s)
// until the sink answers 2xx.
//
// The agent never blocks or crashes its host: it logs to stderr, prefix "auditcov-agent: ", first
// "listening on <address>" (http://HOST:PORT with the bound port, or unix:/path); on any failure it logs and the
// host runs on. Its top-level names all start with auditcovAgent to stay clear of the host package's names, and
// it uses no language feature newer than Go 1.20 (the first with runtime/coverage), since it is compiled at the host
// module's language version.

package main

import (
	"bytes"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/coverage"
	"strconv"
	"strings"
	"time"
)

var auditcovAgentLog = log.New(os.Stderr, "auditcov-agent: ", 0)

func init() {
	where := os.Getenv("AUDITCOV_AGENT")
	if where == "" {
		return
	}
	if err := auditcovAgentStart(where); err != nil {
		auditcovAgentLog.Printf("not started: %v", err)
	}
}

// auditcovAgent answers the HTTP API for this process.
type auditcovAgent struct {
	process string
	token   string // empty: no token required
}

type auditcovAgentHealth struct {
	Process string `json:"process"`
	PID     int    `json:"pid"`
	Kind    string `json:"kind"`
	Mode    string `json:"mode"`
}

type auditcovAgentRegistration struct {
	Process string `json:"process"`
	Kind    string `json:"kind"`
	Address string `json:"address"`
	PID     int    `json:"pid"`
	Token   string `json:"token,omitempty"`
}

// auditcovAgentRoutes maps each path to its one method.
var auditcovAgentRoutes = map[string]string{
	"/v1/health":   http.MethodGet,
	"/v1/meta":     http.MethodGet,
	"/v1/counters": http.MethodGet,
	"/v1/clear":    http.MethodPost,
}

func auditcovAgentStart(where string) error {
	agent := &auditcovAgent{process: os.Getenv("AUDITCOV_PROCESS")}
	if agent.process == "" {
		agent.process = filepath.Base(os.Args[0])
	}
	if path := os.Getenv("AUDITCOV_AGENT_TOKEN_FILE"); path != "" {
		token, err := auditcovAgentReadToken(path)
		if err != nil {
			return fmt.Errorf("AUDITCOV_AGENT_TOKEN_FILE: %v", err)
		}
		agent.token = token
	}
	listener, address, err := auditcovAgentListen(where)
	if err != nil {
		return err
	}
	auditcovAgentLog.Printf("listening on %s", address)
	server := &http.Server{Handler: agent, ReadHeaderTimeout: 10 * time.Second, ErrorLog: auditcovAgentLog}
	go func() {
		auditcovAgentLog.Printf("stopped serving: %v", server.Serve(listener))
	}()
	if sink := os.Getenv("AUDITCOV_SINK"); sink != "" {
		go agent.register(sink, address)
	}
	return nil
}

// auditcovAgentListen opens the listener AUDITCOV_AGENT names; it returns it with the address to advertise.
func auditcovAgentListen(where string) (net.Listener, string, error) {
	if strings.HasPrefix(where, "unix:") {
		path := strings.TrimPrefix(where, "unix:")
		auditcovAgentRemoveStaleSocket(path)
		listener, err := net.Listen("unix", path)
		if err != nil {
			return nil, "", err
		}
		// Owner only: the agent exposes process internals.
		if err := os.Chmod(path, 0o600); err != nil {
			listener.Close()
			return nil, "", err
		}
		return listener, "unix:" + path, nil
	}
	host, _, err := net.SplitHostPort(where)
	if err != nil {
		return nil, "", fmt.Errorf("AUDITCOV_AGENT=%q: want 127.0.0.1:PORT, [::1]:PORT or unix:/path (%v)", where, err)
	}
	ip := net.ParseIP(host)
	loopback := host == "localhost" || (ip != nil && ip.IsLoopback())
	if !loopback && os.Getenv("AUDITCOV_AGENT_ALLOW_REMOTE") != "1" {
		return nil, "", fmt.Errorf("AUDITCOV_AGENT=%q is not a loopback address; the agent exposes process "+
			"internals, so another host needs AUDITCOV_AGENT_ALLOW_REMOTE=1", where)
	}
	listener, err := net.Listen("tcp", where)
	if err != nil {
		return nil, "", err
	}
	return listener, "http://" + listener.Addr().String(), nil
}

// auditcovAgentRemoveStaleSocket removes a socket file nobody answers on (left by an earlier run).
func auditcovAgentRemoveStaleSocket(path string) {
	info, err := os.Lstat(path)
	if err != nil || info.Mode()&os.ModeSocket == 0 {
		return
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return // in use: Listen reports it
	}
	os.Remove(path)
}

func auditcovAgentReadToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return token, nil
}

func (agent *auditcovAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	method, known := auditcovAgentRoutes[r.URL.Path]
	if !known {
		auditcovAgentError(w, http.StatusNotFound, "no such path: "+r.URL.Path)
		return
	}
	if r.URL.Path != "/v1/health" && !agent.authorized(r) {
		auditcovAgentError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		auditcovAgentError(w, http.StatusMethodNotAllowed, r.URL.Path+" takes "+method+", not "+r.Method)
		return
	}
	switch r.URL.Path {
	case "/v1/health":
		auditcovAgentJSON(w, http.StatusOK, auditcovAgentHealth{agent.process, os.Getpid(), "go", "atomic"})
	case "/v1/meta":
		auditcovAgentBytes(w, coverage.WriteMeta)
	case "/v1/counters":
		auditcovAgentBytes(w, coverage.WriteCounters)
	case "/v1/clear":
		if err := coverage.ClearCounters(); err != nil {
			auditcovAgentError(w, http.StatusInternalServerError, err.Error())
			return
		}
		auditcovAgentJSON(w, http.StatusOK, map[string]bool{"cleared": true})
	}
}

func (agent *auditcovAgent) authorized(r *http.Request) bool {
	if agent.token == "" {
		return true
	}
	given := r.Header.Get("Authorization")
	return subtle.ConstantTimeCompare([]byte(given), []byte("Bearer "+agent.token)) == 1
}

// auditcovAgentBytes answers with what write writes, buffered first so that a failure is a clean 500.
func auditcovAgentBytes(w http.ResponseWriter, write func(io.Writer) error) {
	var buffer bytes.Buffer
	if err := write(&buffer); err != nil {
		auditcovAgentError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(buffer.Len()))
	w.Write(buffer.Bytes())
}

func auditcovAgentJSON(w http.ResponseWriter, status int, value interface{}) {
	body, _ := json.Marshal(value)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

func auditcovAgentError(w http.ResponseWriter, status int, message string) {
	auditcovAgentJSON(w, status, map[string]string{"error": message})
}

// register announces the agent to the sink, retrying until the sink answers 2xx; it logs a failure when its
// reason changes, not at every retry.
func (agent *auditcovAgent) register(sink, address string) {
	run := os.Getenv("AUDITCOV_RUN")
	if run == "" {
		run = "default"
	}
	target := strings.TrimRight(sink, "/") + "/v1/runs/" + url.PathEscape(run) + "/agents"
	body, _ := json.Marshal(auditcovAgentRegistration{agent.process, "go", address, os.Getpid(), agent.token})
	delay, last := 500*time.Millisecond, ""
	for {
		err := auditcovAgentPost(target, body)
		if err == nil {
			auditcovAgentLog.Printf("registered with %s as %s", target, agent.process)
			return
		}
		if err.Error() != last {
			last = err.Error()
			auditcovAgentLog.Printf("registering with %s: %v (retrying)", target, err)
		}
		time.Sleep(delay)
		if delay *= 2; delay > 10*time.Second {
			delay = 10 * time.Second
		}
	}
}

// auditcovAgentPost sends one registration. The ingest token and the CA are read at each attempt, so a
// secret mounted after the program started is picked up.
func auditcovAgentPost(target string, body []byte) error {
	request, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return err
	}
	request.Header.Set("Content-Type", "application/json")
	if path := os.Getenv("AUDITCOV_TOKEN_FILE"); path != "" {
		token, err := auditcovAgentReadToken(path)
		if err != nil {
			return fmt.Errorf("AUDITCOV_TOKEN_FILE: %v", err)
		}
		request.Header.Set("Authorization", "Bearer "+token)
	}
	transport := &http.Transport{Proxy: http.ProxyFromEnvironment, DisableKeepAlives: true}
	settings := &tls.Config{}
	if path := os.Getenv("AUDITCOV_SINK_CA"); path != "" {
		pem, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("AUDITCOV_SINK_CA: %v", err)
		}
		settings.RootCAs = x509.NewCertPool()
		if !settings.RootCAs.AppendCertsFromPEM(pem) {
			return errors.New("AUDITCOV_SINK_CA: " + path + " holds no PEM certificate")
		}
	}
	// A sink that requires client certificates (mTLS, sink.toml's client_ca) takes the agent's.
	if certFile, keyFile := os.Getenv("AUDITCOV_SINK_CERT"), os.Getenv("AUDITCOV_SINK_KEY"); certFile != "" || keyFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("AUDITCOV_SINK_CERT/AUDITCOV_SINK_KEY: %v", err)
		}
		settings.Certificates = []tls.Certificate{pair}
	}
	transport.TLSClientConfig = settings
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	response, err := client.Do(request)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	if response.StatusCode/100 != 2 {
		detail, _ := io.ReadAll(io.LimitReader(response.Body, 300))
		return fmt.Errorf("%s: %s", response.Status, bytes.TrimSpace(detail))
	}
	return nil
}
