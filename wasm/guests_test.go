package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/test/jsonlog"
)

// The test plugins are Go programs under testdata/<name>, written against
// the raw ABI (testdata/guest); testdata/fuzz holds the fuzz corpora.
// They are built once per test binary, all in parallel, on first use.
var buildGuests = sync.OnceValues(func() (map[string]string, error) {
	dir := filepath.Join(testRoot, "guests")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("build guests: %w", err)
	}
	entries, err := os.ReadDir("testdata")
	if err != nil {
		return nil, fmt.Errorf("build guests: %w", err)
	}
	//lint:ignore SA1019 the test binary runs where it was built: this is the toolchain that built it, whatever PATH says
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	paths := map[string]string{}
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		if !e.IsDir() || e.Name() == "guest" || e.Name() == "fuzz" {
			continue
		}
		out := filepath.Join(dir, e.Name()+".wasm")
		paths[e.Name()] = out
		wg.Go(func() {
			cmd := exec.Command(goTool, "build", "-buildmode=c-shared", "-o", out, "./testdata/"+e.Name())
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
			if b, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("build guest %s: %w\n%s", e.Name(), err, b)
			}
		})
	}
	wg.Wait()
	return paths, errors.Join(errs...)
})

// guest returns the path of the built test plugin name.
func guest(tb testing.TB, name string) string {
	tb.Helper()
	paths, err := buildGuests()
	require.NoError(tb, err)
	p, ok := paths[name]
	require.True(tb, ok, "no guest testdata/%s", name)
	return p
}

// testRoot holds the built guests and the tests' compilation cache, so
// that each module is compiled once per test binary, not once per test.
var testRoot string

func TestMain(m *testing.M) {
	var err error
	if testRoot, err = os.MkdirTemp("", "observerd-wasm-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(testRoot)
	os.Exit(code)
}

// newTestHost returns a host sharing the tests' cache, closed with the
// test.
func newTestHost(tb testing.TB) *Host {
	tb.Helper()
	h, err := NewHost(context.Background(), HostOptions{CacheDir: filepath.Join(testRoot, "cache"), Log: zerolog.Nop()})
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, h.Close(context.Background())) })
	return h
}

// logBuffer collects JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) logger() zerolog.Logger { return zerolog.New(l).Level(zerolog.DebugLevel) }

func (l *logBuffer) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Len()
}

// entries returns the log lines decoded, each a JSON object whose keys
// appear once, as the daemon's log consumers expect.
func (l *logBuffer) entries(tb testing.TB) []map[string]any {
	tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	out, err := jsonlog.Lines(l.buf.Bytes())
	require.NoError(tb, err)
	return out
}

// find returns the first entry containing s, in any field.
func (l *logBuffer) find(tb testing.TB, s string) map[string]any {
	tb.Helper()
	for _, e := range l.entries(tb) {
		if strings.Contains(fmt.Sprint(e), s) {
			return e
		}
	}
	return nil
}

// doer is an HTTPDoer over a plain client: no redirects followed, hosts
// allowed by name.
type doer struct {
	client  *http.Client
	allowed map[string]bool
}

func newDoer(hosts ...string) *doer {
	d := &doer{
		client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		allowed: map[string]bool{},
	}
	for _, h := range hosts {
		d.allowed[h] = true
	}
	return d
}

func (d *doer) Do(req *http.Request) (*http.Response, error) { return d.client.Do(req) }

func (d *doer) Allowed(u *url.URL) error {
	if !d.allowed[u.Hostname()] {
		return fmt.Errorf("%s is not in allowed_targets", u.Hostname())
	}
	return nil
}
