package policy_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func policyNamed(name string) string {
	return strings.Replace(base, "metadata: {name: web}", "metadata: {name: "+name+"}", 1)
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) {
		path := filepath.Join(dir, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	}
	link := func(target, rel string) { require.NoError(t, os.Symlink(target, filepath.Join(dir, rel))) }

	write("a.yaml", policyNamed("alpha"))
	write("b.yml", policyNamed("beta"))
	write("c.yaml", "\n"+policyNamed("alpha")) // same name as a.yaml
	write("d.yaml", policyNamed("delta")+"    - {name: bad, kind: icmp, interval: 1s}\n")
	write(".hidden.yaml", "not even yaml: [")
	write("notes.txt", "ignored")
	write("sub/inner.yaml", policyNamed("inner")) // subdirectories are not read
	require.NoError(t, os.Mkdir(filepath.Join(dir, "dir.yaml"), 0o755))
	link("nowhere.yaml", "broken.yaml")
	// A Kubernetes ConfigMap mount: name.yaml -> ..data/name.yaml, ..data -> ..<timestamp>.
	write("..2024_05_01_10_00_00.000000001/cm.yaml", policyNamed("configmap"))
	link("..2024_05_01_10_00_00.000000001", "..data")
	link("..data/cm.yaml", "cm.yaml")

	policies, err := policy.LoadDir(dir, policy.Env{})
	var names []string
	for _, p := range policies {
		names = append(names, p.Metadata.Name+"@"+filepath.Base(p.File))
	}
	assert.Equal(t, []string{"alpha@a.yaml", "beta@b.yml", "configmap@cm.yaml"}, names)
	assert.Equal(t, []string{
		"$DIR/broken.yaml: cannot read the file: no such file or directory",
		`$DIR/c.yaml:4:18: metadata.name: the policy name is already used by $DIR/a.yaml:3`,
		"$DIR/d.yaml:10:25: spec.observers[3].kind: unknown kind; use one of: http, prometheus, tcp, process, wasm",
		"$DIR/dir.yaml: not a regular file",
	}, problemLines(err, dir))
	for _, p := range policies {
		assert.Len(t, p.Revision, policy.RevisionLength)
	}
}

func TestLoadDirMissing(t *testing.T) {
	_, err := policy.LoadDir(filepath.Join(t.TempDir(), "none"), policy.Env{})
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "load policies: open ")

	policies, err := policy.LoadDir(t.TempDir(), policy.Env{})
	assert.NoError(t, err)
	assert.Empty(t, policies)
}

func problemLines(err error, dir string) []string {
	var out []string
	for _, p := range yamldoc.ProblemsOf(err) {
		out = append(out, strings.ReplaceAll(p.Error(), dir, "$DIR"))
	}
	return out
}

// A policy file that resolves outside policy_dir is refused, so that
// whoever writes policy_dir cannot make the daemon read (and echo) its own
// secrets; links that stay inside, like a ConfigMap mount's, still work.
func TestPolicyFilesStayInTheirDirectory(t *testing.T) {
	root := t.TempDir()
	secret := filepath.Join(root, "amqp.password")
	require.NoError(t, os.WriteFile(secret, []byte("hunter2-the-secret\n"), 0o600))
	key := filepath.Join(root, "client.key")
	require.NoError(t, os.WriteFile(key, []byte("-----BEGIN PRIVATE KEY-----\nMIIEsecretkeybytes\n"), 0o600))
	dir := filepath.Join(root, "policies.d")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "team"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "team", "web.yaml"), []byte(policyNamed("inside")), 0o644))
	for link, target := range map[string]string{
		"relative-out.yaml":  "../amqp.password",
		"absolute-out.yaml":  secret,
		"key.yaml":           "../client.key",
		"via-subdir.yaml":    "team/../../amqp.password",
		"absolute-in.yaml":   filepath.Join(dir, "team", "web.yaml"),
		"relative-in.yaml":   "team/web.yaml",
		"dir-link-out.yaml":  "out/amqp.password",
		"chain-in-out.yaml":  "relative-out.yaml",
		"chain-in-in.yaml":   "relative-in.yaml",
		"dangling-out.yaml":  "../nowhere.yaml",
		"dangling-in.yaml":   "nowhere.yaml",
		"self-loop.yaml":     "self-loop.yaml",
		"parent-dir.yaml":    "..",
		"proc-environ.yaml":  "/proc/self/environ",
		"dev-zero.yaml":      "/dev/zero",
		"fifo-outside.yaml":  "../fifo",
		"hidden-secret.yaml": "../amqp.password",
	} {
		require.NoError(t, os.Symlink(target, filepath.Join(dir, link)))
	}
	require.NoError(t, os.Symlink(root, filepath.Join(dir, "out")))
	require.NoError(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o600))

	policies, err := policy.LoadDir(dir, policy.Env{})
	var names []string
	for _, p := range policies {
		names = append(names, filepath.Base(p.File))
	}
	// Two files declare "inside": the first by name keeps it.
	assert.Equal(t, []string{"chain-in-in.yaml"}, names)
	outside := "the file resolves outside its directory (a symlink out of it, or an absolute one): refused"
	assert.Equal(t, []string{
		"$DIR/absolute-in.yaml: " + outside, // absolute links are refused even when they point inside
		"$DIR/absolute-out.yaml: " + outside,
		"$DIR/chain-in-out.yaml: " + outside,
		"$DIR/dangling-in.yaml: cannot read the file: no such file or directory",
		"$DIR/dangling-out.yaml: " + outside,
		"$DIR/dev-zero.yaml: " + outside,
		"$DIR/dir-link-out.yaml: " + outside,
		"$DIR/fifo-outside.yaml: " + outside,
		"$DIR/hidden-secret.yaml: " + outside,
		"$DIR/key.yaml: " + outside,
		"$DIR/parent-dir.yaml: " + outside,
		"$DIR/proc-environ.yaml: " + outside,
		"$DIR/relative-in.yaml:3:18: metadata.name: the policy name is already used by $DIR/chain-in-in.yaml:3",
		"$DIR/relative-out.yaml: " + outside,
		"$DIR/self-loop.yaml: cannot read the file: too many levels of symbolic links",
		"$DIR/via-subdir.yaml: " + outside,
	}, problemLines(err, dir))
	assert.NotContains(t, err.Error(), "hunter2")
	assert.NotContains(t, err.Error(), "MIIE")
}

// A secret read as a policy (a hard link, or a file copied into
// policy_dir by mistake) is rejected without a word of it in the problems,
// whatever shape the YAML parser finds it in.
func TestProblemsNeverQuoteTheDocument(t *testing.T) {
	const secret = "Hunter2Secret"
	docs := map[string]string{
		"a scalar":          secret,
		"a quoted scalar":   `"` + secret + `"`,
		"a list":            "- " + secret,
		"a key":             secret + ": x",
		"a pair":            "user: " + secret,
		"a key with spaces": secret + " and more: x",
		"a long key":        strings.Repeat(secret, 10) + ": x",
		"two documents":     secret + "\n---\n" + secret,
		"an anchor":         "a: *" + secret,
		"a tag":             "a: !" + secret + " x",
		"unclosed":          "{" + secret,
		"tabs":              "a:\n\t" + secret,
	}
	fields := []string{"apiVersion", "kind", "metadata.name", "spec.target.name", "spec.target.url",
		"spec.limits.max_requests_per_second", "spec.observers[0].name", "spec.observers[0].kind",
		"spec.observers[0].interval", "spec.observers[0].timeout", "spec.observers[0].http.method",
		"spec.observers[0].http.path", "spec.observers[0].http.body_match", "spec.observers[0].http.extract[0]",
		"spec.observers[0].http.max_body_bytes", "spec.observers[0].thresholds.down_after",
		"spec.observers[1].tcp.address", "spec.observers[2].wasm.sha256",
		// Not spec.observers[2].wasm.module: it is a file name in
		// plugin_dir, which problems name as they name any path.
	}
	for _, f := range fields {
		docs[f] = withValue(t, f, secret)
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			_, err := policy.Parse("p.yaml", []byte(doc), policy.Env{PluginDir: t.TempDir()})
			require.Error(t, err)
			for _, p := range yamldoc.ProblemsOf(err) {
				// Keys are the document's structure and may be quoted,
				// but only short plain ones: not the long one.
				if name == "a key" {
					continue
				}
				assert.NotContains(t, p.Message, secret)
			}
		})
	}
}

// withValue is the base policy with the value at path (as rendered in
// problems) replaced by v.
func withValue(t *testing.T, path, v string) string {
	t.Helper()
	doc := base + "    - {name: proc, kind: process, interval: 5s, process: {name: nginx}}\n"
	var values = map[string]string{
		"apiVersion":                              "apiVersion: observer.polar/v1",
		"kind":                                    "kind: ObservationPolicy",
		"metadata.name":                           "metadata: {name: web}",
		"spec.target.name":                        "target: {name: web,",
		"spec.target.url":                         `url: "http://127.0.0.1:8080"}`,
		"spec.limits.max_requests_per_second":     "observers:",
		"spec.observers[0].name":                  "{name: health,",
		"spec.observers[0].kind":                  "kind: http, interval: 5s, http:",
		"spec.observers[0].interval":              "kind: http, interval: 5s, http:",
		"spec.observers[0].timeout":               "kind: http, interval: 5s, http:",
		"spec.observers[0].http.method":           "{path: /healthz,",
		"spec.observers[0].http.path":             "{path: /healthz,",
		"spec.observers[0].http.body_match":       "{path: /healthz,",
		"spec.observers[0].http.extract[0]":       "{path: /healthz,",
		"spec.observers[0].http.max_body_bytes":   "{path: /healthz,",
		"spec.observers[0].thresholds.down_after": "kind: http, interval: 5s, http:",
		"spec.observers[1].tcp.address":           "tcp: {}}",
		"spec.observers[2].wasm.sha256":           "{module: backlog.wasm,",
	}
	replacements := map[string]string{
		"apiVersion":                              "apiVersion: " + v,
		"kind":                                    "kind: " + v,
		"metadata.name":                           "metadata: {name: " + v + "}",
		"spec.target.name":                        "target: {name: " + v + ",",
		"spec.target.url":                         "url: " + v + "}",
		"spec.limits.max_requests_per_second":     "limits: {max_requests_per_second: " + v + "}\n  observers:",
		"spec.observers[0].name":                  "{name: " + v + ",",
		"spec.observers[0].kind":                  "kind: " + v + ", interval: 5s, http:",
		"spec.observers[0].interval":              "kind: http, interval: " + v + ", http:",
		"spec.observers[0].timeout":               "kind: http, interval: 5s, timeout: " + v + ", http:",
		"spec.observers[0].http.method":           "{method: " + v + ", path: /healthz,",
		"spec.observers[0].http.path":             "{path: " + v + ",",
		"spec.observers[0].http.body_match":       "{body_match: '(" + v + "', path: /healthz,",
		"spec.observers[0].http.extract[0]":       "{extract: [" + v + "], path: /healthz,",
		"spec.observers[0].http.max_body_bytes":   "{max_body_bytes: " + v + ", path: /healthz,",
		"spec.observers[0].thresholds.down_after": "kind: http, interval: 5s, thresholds: {down_after: " + v + "}, http:",
		"spec.observers[1].tcp.address":           "tcp: {address: " + v + "}}",
		"spec.observers[2].wasm.sha256":           "{sha256: " + v + ", module: backlog.wasm,",
	}
	old, ok := values[path]
	require.True(t, ok, path)
	require.Contains(t, doc, old, path)
	return strings.Replace(doc, old, replacements[path], 1)
}

// The policies of a directory together stay within the daemon's limits on
// observers and plugin memory: the first ones by file name run, the one
// that would go beyond is rejected with the limit named.
func TestLoadDirTotals(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a", "b", "c"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".yaml"), []byte(policyNamed(name)), 0o644))
	}
	limits := policy.DefaultBounds()
	limits.MaxObservers = 7 // each policy has 3
	policies, err := policy.LoadDir(dir, policy.Env{Limits: &limits})
	require.Len(t, policies, 2)
	assert.Equal(t, []string{
		"$DIR/c.yaml:7:5: spec.observers: the daemon runs at most 7 observers (limits.max_observers): this policy has 3, the other policies 6",
	}, problemLines(err, dir))

	limits = policy.DefaultBounds()
	limits.MaxPluginMemory = 64 * yamldoc.MiB // each policy's plugin takes the default 32MiB
	policies, err = policy.LoadDir(dir, policy.Env{Limits: &limits})
	require.Len(t, policies, 2)
	assert.Equal(t, []string{
		"$DIR/c.yaml:7:5: spec.observers: plugin observers may reserve at most 64MiB of memory together (limits.max_plugin_memory): this policy's memory_limit add up to 32MiB, the other policies' to 64MiB",
	}, problemLines(err, dir))
}

// Without a daemon config, the default limits apply: a policy cannot ask
// for an interval under 1s, nor for more than the default rates.
func TestDefaultDaemonLimits(t *testing.T) {
	doc := strings.Replace(base, "interval: 5s", "interval: 500ms", 1)
	doc = strings.Replace(doc, "  observers:", "  limits: {max_requests_per_second: 101, max_concurrent_requests: 17}\n  observers:", 1)
	_, err := policy.Parse("p.yaml", []byte(doc), policy.Env{})
	assert.Equal(t, []string{
		"p.yaml:6:37: spec.limits.max_requests_per_second: must be at most 100 (limits.max_requests_per_second of the daemon config), got 101",
		"p.yaml:6:67: spec.limits.max_concurrent_requests: must be at most 16 (limits.max_concurrent_requests of the daemon config), got 17",
		"p.yaml:8:44: spec.observers[0].interval: must be at least 1s (limits.min_interval of the daemon config), got 500ms",
	}, problemLines(err, "/no-such-dir"))
}

// A module that is a FIFO is refused at once: the checksum must not wait
// for a writer that never comes.
func TestPluginFIFOIsRefused(t *testing.T) {
	plugins := t.TempDir()
	require.NoError(t, syscall.Mkfifo(filepath.Join(plugins, "backlog.wasm"), 0o644))
	done := make(chan error, 1)
	go func() {
		_, err := policy.Parse("p.yaml", []byte(base), policy.Env{PluginDir: plugins})
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "spec.observers[2].wasm.module: cannot read plugin backlog.wasm: not a regular file")
	case <-time.After(time.Minute):
		t.Fatal("parsing a policy whose module is a FIFO hangs")
	}
}
