package policy_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	_ "github.com/polar/observerd/actors/observer/kinds/all"
	"github.com/polar/observerd/actors/observer/kinds/http"
	"github.com/polar/observerd/actors/observer/kinds/tcp"
	"github.com/polar/observerd/actors/observer/kinds/wasm"
	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/*/expected.txt")

// testEnv allows loopback and web.internal, pid files in /run, the
// process name nginx, with the plugins of testdata, and the default limits
// but for intervals down to 100ms.
func testEnv(t *testing.T) policy.Env {
	t.Helper()
	allowed, err := targets.Parse([]string{"127.0.0.0/8", "::1/128", "web.internal"})
	require.NoError(t, err)
	limits := policy.DefaultBounds()
	limits.MinInterval = yamldoc.Duration(100 * time.Millisecond)
	return policy.Env{Allowed: allowed, ProcessNames: []string{"nginx"}, PluginDir: "testdata/plugins", Limits: &limits}
}

// render is what a golden file holds: the problems one per line, or the
// revision and the parsed policy with its defaults.
func render(t *testing.T, p *policy.Policy, err error) string {
	t.Helper()
	if err != nil {
		var b strings.Builder
		for _, problem := range yamldoc.ProblemsOf(err) {
			b.WriteString(problem.Error())
			b.WriteByte('\n')
		}
		return b.String()
	}
	out, err := json.MarshalIndent(p, "", "  ")
	require.NoError(t, err)
	return fmt.Sprintf("OK revision %s\n%s\n", p.Revision, out)
}

// TestGolden parses each testdata/<case>/input.yaml and compares the outcome
// with testdata/<case>/expected.txt (go test -update rewrites them).
func TestGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*/input.yaml")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(cases), 40)
	bad := 0
	for _, input := range cases {
		dir := filepath.Dir(input)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			p, err := policy.ParseFile(input, testEnv(t))
			if err != nil {
				bad++
			}
			assert.Equal(t, strings.HasPrefix(filepath.Base(dir), "good-"), err == nil, "cases named good-* must parse, others must not")
			got := render(t, p, err)
			expected := filepath.Join(dir, "expected.txt")
			if *update {
				require.NoError(t, os.WriteFile(expected, []byte(got), 0o644))
			}
			want, err := os.ReadFile(expected)
			require.NoError(t, err, "run go test -update to create it")
			assert.Equal(t, string(want), got)
		})
	}
	assert.GreaterOrEqual(t, bad, 25)
}

func TestSamplePolicyParses(t *testing.T) {
	p, err := policy.ParseFile("../configs/policies/web.yaml", policy.Env{Allowed: targets.Default(), ProcessNames: []string{"observable"}})
	require.NoError(t, err)
	assert.Equal(t, "web", p.Metadata.Name)
	assert.Equal(t, policy.Target{Name: "web", URL: "http://127.0.0.1:8080"}, p.Spec.Target)
	var kinds []string
	for _, o := range p.Spec.Observers {
		kinds = append(kinds, o.Kind+"/"+o.Interval.String())
	}
	assert.Equal(t, []string{"http/2s", "http/5s", "prometheus/10s", "tcp/5s", "process/5s"}, kinds, "every built-in kind")
	health, ok := p.ObserverByName("health")
	require.True(t, ok)
	assert.Equal(t, "/healthz", health.Section.(*http.Section).Path)
	assert.Equal(t, 16, health.Line)
	_, ok = p.ObserverByName("nope")
	assert.False(t, ok)
}

func TestFileSizeLimit(t *testing.T) {
	huge := []byte("# " + strings.Repeat("x", policy.MaxFileSize) + "\n")
	_, err := policy.Parse("huge.yaml", huge, policy.Env{})
	assert.EqualError(t, err, fmt.Sprintf("huge.yaml: the file has %d bytes; a policy may have at most 262144 (256KiB)", len(huge)))

	file := filepath.Join(t.TempDir(), "huge.yaml")
	require.NoError(t, os.WriteFile(file, huge, 0o600))
	_, err = policy.ParseFile(file, policy.Env{})
	assert.EqualError(t, err, fmt.Sprintf("%s: the file has %d bytes; a policy may have at most 262144 (256KiB)", file, len(huge)))
}

func TestParseFileErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := policy.ParseFile(filepath.Join(dir, "none.yaml"), policy.Env{})
	assert.EqualError(t, err, filepath.Join(dir, "none.yaml")+": cannot read the file: no such file or directory")
	_, err = policy.ParseFile(dir, policy.Env{})
	assert.EqualError(t, err, dir+": not a regular file")
}

const base = `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: "http://127.0.0.1:8080"}
  observers:
    - {name: health, kind: http, interval: 5s, http: {path: /healthz, headers: {Accept: text/plain}}}
    - {name: port, kind: tcp, interval: 10s, tcp: {}}
    - {name: plug, kind: wasm, interval: 10s, wasm: {module: backlog.wasm, config: {threshold: 100, names: [a, b]}}}
`

func mustParse(t *testing.T, doc string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("p.yaml", []byte(doc), policy.Env{})
	require.NoError(t, err, doc)
	return p
}

func TestRevisionStability(t *testing.T) {
	rev := mustParse(t, base).Revision
	require.Len(t, rev, policy.RevisionLength)

	same := map[string]string{
		"block style, comments, key order": `# the web service
kind: ObservationPolicy   # the kind
apiVersion: observer.polar/v1
spec:
  observers:
    - name: health
      interval: 5s
      kind: http
      http:
        headers:
          accept: text/plain   # header names are case-insensitive
        path: /healthz
    - tcp: {}
      kind: tcp
      name: port
      interval: 10s
    - name: plug
      kind: wasm
      interval: 10s
      wasm:
        config: {names: [a, b], threshold: 100}
        module: backlog.wasm
  target:
    url: http://127.0.0.1:8080
    name: web
metadata:
  name: web
`,
		"explicit defaults": strings.NewReplacer(
			"metadata: {name: web}", "metadata: {name: web}\n",
			`url: "http://127.0.0.1:8080"}`, `url: "http://127.0.0.1:8080"}`+"\n  limits: {max_requests_per_second: 10, max_concurrent_requests: 2}",
			"interval: 5s, http: {path: /healthz,", "interval: 5s, timeout: 1s, http: {method: GET, expect_status: [200], max_body_bytes: 64KiB, max_redirects: 3, follow_redirects: false, extract: [], path: /healthz,",
			"tcp: {}", `timeout: 1000ms, tcp: {address: "127.0.0.1:8080"}`,
			"module: backlog.wasm,", "module: backlog.wasm, memory_limit: 32MiB, timeout: 1s, sha256: '',",
		).Replace(base),
		"observers reordered": strings.Join(func() []string {
			l := strings.Split(strings.TrimSuffix(base, "\n"), "\n")
			l[6], l[8] = l[8], l[6]
			return l
		}(), "\n"),
	}
	for name, doc := range same {
		assert.Equal(t, rev, mustParse(t, doc).Revision, name)
	}

	changed := map[string][2]string{
		"interval":         {"interval: 5s", "interval: 6s"},
		"path":             {"/healthz", "/health"},
		"header value":     {"text/plain", "text/html"},
		"target url":       {"127.0.0.1:8080", "127.0.0.1:8081"},
		"target name":      {"target: {name: web", "target: {name: www"},
		"policy name":      {"metadata: {name: web}", "metadata: {name: www}"},
		"limits":           {`url: "http://127.0.0.1:8080"}`, `url: "http://127.0.0.1:8080"}` + "\n  limits: {max_requests_per_second: 5}"},
		"plugin config":    {"threshold: 100", "threshold: 101"},
		"plugin list":      {"[a, b]", "[b, a]"},
		"observer renamed": {"name: port", "name: socket"},
		"timeout":          {"kind: tcp, interval: 10s,", "kind: tcp, interval: 10s, timeout: 2s,"},
	}
	for name, c := range changed {
		require.Contains(t, base, c[0], name)
		assert.NotEqual(t, rev, mustParse(t, strings.Replace(base, c[0], c[1], 1)).Revision, name)
	}
}

func TestDiff(t *testing.T) {
	old := mustParse(t, base)
	edit := func(from, to string) *policy.Policy {
		require.Contains(t, base, from)
		return mustParse(t, strings.Replace(base, from, to, 1))
	}
	tests := []struct {
		name string
		new  *policy.Policy
		want policy.Change
	}{
		{"identical", mustParse(t, base), policy.Change{}},
		{"comments and blank lines only", mustParse(t, "# edited by ops\n\n"+strings.ReplaceAll(base, "\n", "   \n")+"\n# end\n"), policy.Change{}},
		{"reordered and reformatted", mustParse(t, strings.Replace(base,
			"    - {name: health, kind: http, interval: 5s, http: {path: /healthz, headers: {Accept: text/plain}}}\n    - {name: port, kind: tcp, interval: 10s, tcp: {}}\n",
			"    - {name: port, kind: tcp, interval: 10s, tcp: {}}\n    - name: health\n      kind: http\n      interval: 5s\n      http: {path: /healthz, headers: {accept: text/plain}}\n", 1)), policy.Change{}},
		{"update", edit("interval: 5s", "interval: 6s"), policy.Change{Updated: []string{"health"}}},
		{"update plugin config", edit("threshold: 100", "threshold: 7"), policy.Change{Updated: []string{"plug"}}},
		{"add", mustParse(t, base+"    - {name: extra, kind: tcp, interval: 3s, tcp: {}}\n"), policy.Change{Added: []string{"extra"}}},
		{"remove", edit("    - {name: port, kind: tcp, interval: 10s, tcp: {}}\n", ""), policy.Change{Removed: []string{"port"}}},
		{"rename is remove plus add", edit("name: port", "name: socket"), policy.Change{Added: []string{"socket"}, Removed: []string{"port"}}},
		{"target change restarts all", edit("127.0.0.1:8080", "127.0.0.1:9090"),
			policy.Change{Updated: []string{"health", "plug", "port"}, TargetOrLimitsChanged: true}},
		{"limits change restarts all but the added", mustParse(t, strings.Replace(base+"    - {name: extra, kind: tcp, interval: 3s, tcp: {}}\n",
			"metadata: {name: web}", "metadata: {name: web}\n", 1)+"  limits: {max_concurrent_requests: 1}\n"),
			policy.Change{Added: []string{"extra"}, Updated: []string{"health", "plug", "port"}, TargetOrLimitsChanged: true}},
		{"policy renamed", edit("metadata: {name: web}", "metadata: {name: www}"),
			policy.Change{Added: []string{"health", "plug", "port"}, Removed: []string{"health", "plug", "port"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := policy.Diff(old, tt.new)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.want.IsZero(), got.IsZero())
		})
	}
	assert.Equal(t, policy.Change{Added: []string{"health", "plug", "port"}}, policy.Diff(nil, old))
	assert.Equal(t, policy.Change{Removed: []string{"health", "plug", "port"}}, policy.Diff(old, nil))
	assert.True(t, policy.Diff(nil, nil).IsZero())
}

func TestDefaults(t *testing.T) {
	p := mustParse(t, `apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: "https://localhost"}
  observers:
    - {name: slow, kind: tcp, interval: 1m, tcp: {}}
    - {name: fast, kind: tcp, interval: 1s, tcp: {address: "[::1]:22"}}
    - {name: faster, kind: wasm, interval: 1500ms, wasm: {module: x.wasm}}
    - {name: capped, kind: wasm, interval: 10s, timeout: 400ms, wasm: {module: x.wasm}}
`)
	assert.Equal(t, policy.Limits{MaxRequestsPerSecond: 10, MaxConcurrentRequests: 2}, p.Spec.Limits)
	obs := p.Spec.Observers
	assert.Equal(t, yamldoc.Duration(time.Second), obs[0].Timeout)
	assert.Equal(t, "localhost:443", obs[0].Section.(*tcp.Section).Address, "from the target URL and its scheme")
	assert.Equal(t, yamldoc.Duration(500*time.Millisecond), obs[1].Timeout, "half the interval")
	assert.Equal(t, "[::1]:22", obs[1].Section.(*tcp.Section).Address)
	assert.Equal(t, yamldoc.Duration(750*time.Millisecond), obs[2].Timeout)
	assert.Equal(t, yamldoc.Duration(750*time.Millisecond), obs[2].Section.(*wasm.Section).Timeout, "capped at the observer's timeout")
	assert.Equal(t, 32*yamldoc.MiB, obs[2].Section.(*wasm.Section).MemoryLimit)
	assert.Equal(t, yamldoc.Duration(400*time.Millisecond), obs[3].Section.(*wasm.Section).Timeout)
}

func TestNilAllowedMeansLoopback(t *testing.T) {
	doc := strings.Replace(base, "127.0.0.1:8080", "192.168.1.1:8080", 1)
	_, err := policy.Parse("p.yaml", []byte(doc), policy.Env{})
	assert.EqualError(t, err, `p.yaml:5:28: spec.target.url: the host is not in allowed_targets [127.0.0.0/8 ::1/128]`)
}

// TestGoldenDirs loads each testdata/<case>/policies directory as the
// daemon loads policy_dir and compares the outcome with
// testdata/<case>/expected.txt: the policies kept, then the problems.
func TestGoldenDirs(t *testing.T) {
	cases, err := filepath.Glob("testdata/*/policies")
	require.NoError(t, err)
	require.NotEmpty(t, cases)
	for _, dir := range cases {
		t.Run(filepath.Base(filepath.Dir(dir)), func(t *testing.T) {
			ps, err := policy.LoadDir(dir, testEnv(t))
			var b strings.Builder
			for _, p := range ps {
				fmt.Fprintf(&b, "OK %s: policy %s revision %s\n", p.File, p.Metadata.Name, p.Revision)
			}
			b.WriteString(render(t, nil, err))
			expected := filepath.Join(filepath.Dir(dir), "expected.txt")
			if *update {
				require.NoError(t, os.WriteFile(expected, []byte(b.String()), 0o644))
			}
			want, err := os.ReadFile(expected)
			require.NoError(t, err, "run go test -update to create it")
			assert.Equal(t, string(want), b.String())
		})
	}
}

func TestCheckPluginProblems(t *testing.T) {
	env := testEnv(t)
	var checked []string
	env.CheckPlugin = func(path string, _ uint64) error {
		checked = append(checked, path)
		if strings.HasSuffix(path, "backlog.wasm") {
			return fmt.Errorf("plugin backlog.wasm: imports %q, which the host does not offer", "env.socket")
		}
		return nil
	}
	_, err := policy.Parse("web.yaml", []byte(`apiVersion: observer.polar/v1
kind: ObservationPolicy
metadata: {name: web}
spec:
  target: {name: web, url: "http://127.0.0.1:8080"}
  observers:
    - {name: plug, kind: wasm, interval: 10s, wasm: {module: backlog.wasm}}
    - {name: gone, kind: wasm, interval: 10s, wasm: {module: missing.wasm}}
`), env)
	assert.EqualError(t, err, `web.yaml:7:62: spec.observers[0].wasm.module: plugin backlog.wasm: imports "env.socket", which the host does not offer
web.yaml:8:62: spec.observers[1].wasm.module: plugin missing.wasm not found in plugin_dir testdata/plugins`)
	assert.Equal(t, []string{"testdata/plugins/backlog.wasm"}, checked, "only present modules are checked")
}
