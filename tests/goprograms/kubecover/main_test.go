package main

// Kubernetes' coverage build (hack/lib/golang.sh, pkg/util/coverage): the binary is the package's test binary,
// and the testing framework is made to write its coverage profile every few seconds by "running" an empty test
// suite (testing.MainStart with no tests), the profile then renamed into place at KUBE_COVERAGE_FILE so that a
// reader never sees it half written. Here TestMain does the same, every KUBE_COVERAGE_FLUSH_INTERVAL, while the
// server runs in the background. Kubernetes passes MainStart dependencies of its own; since Go 1.20 those must
// include the runtime's coverage hooks, so the ones `go test` gave this binary are reused.

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"testing"
	"time"
	"unsafe"
)

func TestMain(m *testing.M) {
	final := os.Getenv("KUBE_COVERAGE_FILE")
	if final == "" {
		final = "/tmp/kubecover.cov"
	}
	interval, err := time.ParseDuration(os.Getenv("KUBE_COVERAGE_FLUSH_INTERVAL"))
	if err != nil {
		interval = 5 * time.Second
	}
	temporary := final + ".tmp"
	flag.Set("test.coverprofile", temporary)
	flag.Set("test.run", "^$")
	flag.Parse()
	// m.deps, of testing's unexported testDeps type: reflect can pass it on without naming it.
	field := reflect.ValueOf(m).Elem().FieldByName("deps")
	deps := reflect.NewAt(field.Type(), unsafe.Pointer(field.UnsafeAddr())).Elem()
	none := []reflect.Value{
		reflect.ValueOf([]testing.InternalTest(nil)),
		reflect.ValueOf([]testing.InternalBenchmark(nil)),
		reflect.ValueOf([]testing.InternalFuzzTarget(nil)),
		reflect.ValueOf([]testing.InternalExample(nil)),
	}
	go serve()
	for {
		time.Sleep(interval)
		dummy := reflect.ValueOf(testing.MainStart).Call(append([]reflect.Value{deps}, none...))[0]
		dummy.Interface().(*testing.M).Run()
		if err := os.Rename(temporary, final); err != nil {
			fmt.Fprintln(os.Stderr, "kubecover: cannot move the coverage profile:", err)
		}
	}
}
