//go:build integration

// Package install tests `make install`: the files it places, their modes,
// that it never overwrites an operator's config, that the installed daemon
// runs and accepts the installed example config, that the systemd unit
// verifies, and that the example RabbitMQ config agrees with the one the
// test harness boots.
package install

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// repo is the repository root, two levels above this package.
func repo(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(root, "Makefile"))
	return root
}

// makeInstall runs `make install` into destdir and returns its output.
func makeInstall(t *testing.T, destdir, prefix string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "-C", repo(t), "install", "DESTDIR="+destdir, "PREFIX="+prefix)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "make install:\n%s", out)
	return string(out)
}

func assertMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if !assert.NoError(t, err) {
		return
	}
	assert.Equal(t, want, st.Mode()&(fs.ModeDir|fs.ModePerm), "mode of %s", path)
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func run(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	}
	require.NoError(t, err, "run %s", name)
	return out.String(), 0
}

func TestInstall(t *testing.T) {
	root := repo(t)
	dest := t.TempDir()
	makeInstall(t, dest, "/usr")
	at := func(p string) string { return filepath.Join(dest, p) }

	// Every file, with its mode.
	assertMode(t, at("usr/bin/observerd"), 0o755)
	assertMode(t, at("usr/bin/observerctl"), 0o755)
	assertMode(t, at("usr/lib/systemd/system/observerd.service"), 0o644)
	assertMode(t, at("usr/lib/sysusers.d/observerd.conf"), 0o644)
	assertMode(t, at("usr/share/observerd/observerd.example.yaml"), 0o644)
	assertMode(t, at("etc/observerd/observerd.yaml"), 0o644)
	assertMode(t, at("etc/observerd/policies.d"), fs.ModeDir|0o755)
	assertMode(t, at("usr/lib/observerd/plugins"), fs.ModeDir|0o755)
	assertMode(t, at("usr/share/doc/observerd/operations.md"), 0o644)
	assertMode(t, at("usr/share/doc/observerd/rabbitmq/rabbitmq.conf"), 0o644)
	assertMode(t, at("usr/share/observerd/policy.schema.json"), 0o644)
	assertMode(t, at("usr/share/observerd/prometheus/observerd.rules.yml"), 0o644)
	policies, err := os.ReadDir(at("etc/observerd/policies.d"))
	require.NoError(t, err)
	assert.Empty(t, policies, "policies.d starts empty")

	// Plugins: every bin/plugins/*.wasm, and nothing else.
	wasm, _ := filepath.Glob(filepath.Join(root, "bin", "plugins", "*.wasm"))
	plugins, err := os.ReadDir(at("usr/lib/observerd/plugins"))
	require.NoError(t, err)
	assert.Len(t, plugins, len(wasm), "plugins installed: one per bin/plugins/*.wasm")
	for _, w := range wasm {
		assertMode(t, at("usr/lib/observerd/plugins/"+filepath.Base(w)), 0o644)
	}

	// With PREFIX=/usr the config is the example as is; the binaries are
	// the built ones.
	example := read(t, filepath.Join(root, "configs", "observerd.example.yaml"))
	assert.Equal(t, example, read(t, at("etc/observerd/observerd.yaml")))
	assert.Equal(t, read(t, filepath.Join(root, "bin", "observerd")), read(t, at("usr/bin/observerd")))
	unit := read(t, at("usr/lib/systemd/system/observerd.service"))
	assert.Contains(t, unit, "\nExecStart=/usr/bin/observerd --config /etc/observerd/observerd.yaml\n")
	assert.Equal(t, "u observerd - \"observerd host-local observer\" /var/lib/observerd /usr/sbin/nologin\n",
		read(t, at("usr/lib/sysusers.d/observerd.conf")))

	schema, err := exec.Command(at("usr/bin/observerctl"), "policy", "schema").Output()
	require.NoError(t, err)
	assert.Equal(t, string(schema), read(t, at("usr/share/observerd/policy.schema.json")), "the schema of the installed observerctl")
	assert.Equal(t, read(t, filepath.Join(root, "configs", "prometheus", "observerd.rules.yml")),
		read(t, at("usr/share/observerd/prometheus/observerd.rules.yml")), "with PREFIX=/usr, the rules as they are")

	t.Run("unit", func(t *testing.T) { checkUnit(t, unit) })
	t.Run("keeps the operator's config", func(t *testing.T) {
		cfg := at("etc/observerd/observerd.yaml")
		mine := example + "\n# edited by the operator\n"
		require.NoError(t, os.WriteFile(cfg, []byte(mine), 0o640))
		require.NoError(t, os.Chmod(cfg, 0o640))
		out := makeInstall(t, dest, "/usr")
		assert.Equal(t, mine, read(t, cfg), "a second make install overwrote the config")
		assertMode(t, cfg, 0o640)
		assert.Contains(t, out, "kept "+cfg)
		assert.Equal(t, example, read(t, at("usr/share/observerd/observerd.example.yaml")), "the new example is still installed")
	})
	t.Run("runs", func(t *testing.T) { checkRuns(t, dest, root) })
	t.Run("systemd-analyze verify", func(t *testing.T) { analyze(t, dest, unit) })
}

// TestInstallPrefix: PREFIX moves the binaries, the unit, the plugins and
// the paths that point at them; /etc stays /etc.
func TestInstallPrefix(t *testing.T) {
	dest := t.TempDir()
	makeInstall(t, dest, "/opt/obs")
	at := func(p string) string { return filepath.Join(dest, p) }
	assertMode(t, at("opt/obs/bin/observerd"), 0o755)
	assertMode(t, at("opt/obs/lib/observerd/plugins"), fs.ModeDir|0o755)
	assertMode(t, at("etc/observerd/observerd.yaml"), 0o644)
	unit := read(t, at("opt/obs/lib/systemd/system/observerd.service"))
	assert.Contains(t, unit, "\nExecStart=/opt/obs/bin/observerd --config /etc/observerd/observerd.yaml\n")
	assert.NotContains(t, unit, "/usr/bin/observerd")
	assert.Contains(t, unit, "file:///opt/obs/share/doc/observerd/operations.md")
	cfg := read(t, at("etc/observerd/observerd.yaml"))
	assert.Contains(t, cfg, "\nplugin_dir: /opt/obs/lib/observerd/plugins ")
	assert.Contains(t, cfg, "\npolicy_dir: /etc/observerd/policies.d ")
	assert.Contains(t, cfg, "\nstate_dir: /var/lib/observerd ")
	rules := read(t, at("opt/obs/share/observerd/prometheus/observerd.rules.yml"))
	assert.Contains(t, rules, "file:///opt/obs/share/doc/observerd/troubleshooting.md#")
	assert.NotContains(t, rules, "/usr/share/doc/observerd")
}

// checkUnit holds the unit to the hardening it promises.
func checkUnit(t *testing.T, unit string) {
	for _, line := range []string{
		"User=observerd", "DynamicUser=no",
		"StateDirectory=observerd", "StateDirectoryMode=0700", "ConfigurationDirectory=observerd",
		"ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
		"ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "RestrictNamespaces=yes", "LockPersonality=yes",
		"SystemCallFilter=@system-service", "CapabilityBoundingSet=", "ProtectProc=default",
		"EnvironmentFile=-/etc/observerd/observerd.env",
	} {
		assert.Contains(t, unit, "\n"+line+"\n")
	}
	// wazero's compiler needs memory it can make executable.
	assert.NotContains(t, unit, "\nMemoryDenyWriteExecute=")
	// The stop must outlast the daemon's 8 s drain.
	m := regexp.MustCompile(`\nTimeoutStopSec=(\d+)s\n`).FindStringSubmatch(unit)
	require.NotNil(t, m, "TimeoutStopSec")
	secs, _ := strconv.Atoi(m[1])
	assert.Greater(t, secs, 8)
	assert.Regexp(t, `\nRestartSec=\d+s\n`, unit)
}

// checkRuns runs the installed daemon: --version, and --check-config on the
// installed config with its directories moved into the test's.
func checkRuns(t *testing.T, dest, root string) {
	bin := filepath.Join(dest, "usr", "bin", "observerd")
	out, code := run(t, bin, "--version")
	assert.Equal(t, 0, code, out)
	assert.Regexp(t, `^observerd \S+\n$`, out)
	out, code = run(t, filepath.Join(dest, "usr", "bin", "observerctl"), "--help")
	assert.Equal(t, 0, code, out)

	// The installed config as is: its policy_dir is the real
	// /etc/observerd/policies.d, which this machine may not have; every
	// key must still be valid (no problem reported against the config).
	installed := filepath.Join(dest, "etc", "observerd", "observerd.yaml")
	out, _ = run(t, bin, "--check-config", "--config", installed)
	assert.NotContains(t, out, installed+":", "the installed config has problems:\n%s", out)

	// A copy pointing its directories into the staging tree, with a sample
	// policy: ok.
	cfg := read(t, installed)
	for key, dir := range map[string]string{
		"policy_dir": filepath.Join(dest, "etc", "observerd", "policies.d"),
		"plugin_dir": filepath.Join(dest, "usr", "lib", "observerd", "plugins"),
		"state_dir":  filepath.Join(t.TempDir(), "state"),
	} {
		re := regexp.MustCompile(`(?m)^` + key + `: \S+`)
		require.Regexp(t, re, cfg)
		cfg = re.ReplaceAllString(cfg, key+": "+dir)
	}
	copied := filepath.Join(t.TempDir(), "observerd.yaml")
	require.NoError(t, os.WriteFile(copied, []byte(cfg), 0o644))
	out, code = run(t, bin, "--check-config", "--config", copied)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "ok (0 policies in ")

	policy := read(t, filepath.Join(root, "configs", "examples", "http.yaml"))
	require.NoError(t, os.WriteFile(filepath.Join(dest, "etc", "observerd", "policies.d", "http.yaml"), []byte(policy), 0o644))
	defer os.Remove(filepath.Join(dest, "etc", "observerd", "policies.d", "http.yaml"))
	out, code = run(t, bin, "--check-config", "--config", copied)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "ok (1 policies in ")

	// A broken config: exit 1 with file:line.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte(cfg+"bogus: 1\n"), 0o644))
	out, code = run(t, bin, "--check-config", "--config", bad)
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, bad+":")
	assert.Contains(t, out, `unknown key "bogus"`)
}

// analyze runs systemd-analyze on the installed unit, with ExecStart
// pointed at the staged binary (verify checks that it is executable).
func analyze(t *testing.T, dest, unit string) {
	tool, err := exec.LookPath("systemd-analyze")
	require.NoError(t, err, "systemd-analyze is missing: make deps installs Debian's systemd package")
	staged := strings.ReplaceAll(unit, "ExecStart=/usr/bin/observerd", "ExecStart="+filepath.Join(dest, "usr", "bin", "observerd"))
	path := filepath.Join(t.TempDir(), "observerd.service")
	require.NoError(t, os.WriteFile(path, []byte(staged), 0o644))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, "verify", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	// verify warns about unknown keys and bad values on stderr but exits 0.
	assert.NoError(t, err, "systemd-analyze verify:\n%s%s", stdout.String(), stderr.String())
	assert.Empty(t, strings.TrimSpace(stderr.String()), "systemd-analyze verify warns")

	// The exposure score (systemd 252 and later can rate a unit file).
	cmd = exec.CommandContext(ctx, tool, "security", "--offline=true", "--no-pager", path)
	out, err := cmd.CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`).FindSubmatch(out)
	require.NoError(t, err, "systemd-analyze security --offline (systemd 252 or later):\n%s", out)
	require.NotNil(t, m, "no exposure level in:\n%s", out)
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %.1f", score)
	assert.LessOrEqual(t, score, 1.5, "the unit's exposure level; every point left is justified in the unit's comments")
}

// TestUnitLimits: the unit does not restart into a config error, stops
// after a start limit, and bounds the daemon's memory and tasks.
func TestUnitLimits(t *testing.T) {
	unit := read(t, filepath.Join(repo(t), "configs", "observerd.service"))
	for _, line := range []string{
		"RestartPreventExitStatus=2", "StartLimitIntervalSec=300", "StartLimitBurst=10",
		"PrivateMounts=yes", "MemoryHigh=1G", "MemoryMax=1536M", "TasksMax=256",
		"RuntimeDirectory=observerd", "Environment=GOMEMLIMIT=512MiB",
	} {
		assert.Contains(t, unit, "\n"+line+"\n")
	}
	assert.NotContains(t, unit, "or run the observed service as the observerd user")
}

// TestRabbitMQConfigMatchesHarness: every setting of the example broker
// config (but paths and the listener's address) is one the test harness
// boots with, so the tests exercise what the docs recommend.
func TestRabbitMQConfigMatchesHarness(t *testing.T) {
	root := repo(t)
	harness := read(t, filepath.Join(root, "test", "rabbitmq", "rabbitmq.go"))
	conf := read(t, filepath.Join(root, "configs", "rabbitmq", "rabbitmq.conf"))
	var settings int
	for _, line := range strings.Split(conf, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, _, ok := strings.Cut(line, " = ")
		require.True(t, ok, "not a key = value line: %q", line)
		settings++
		switch {
		case key == "listeners.ssl.default":
			// On a loopback address: 127.0.0.1, or a cluster node's own.
			assert.Contains(t, harness, `"listeners.ssl.default = " + net.JoinHostPort(n.listen,`)
			assert.Contains(t, harness, `listen: "127.0.0.1"`)
		case strings.HasSuffix(key, "file"):
			assert.Contains(t, harness, `"`+key+` = "`)
		default:
			assert.Contains(t, harness, `"`+line+`"`, "the harness does not set %s", line)
		}
	}
	assert.GreaterOrEqual(t, settings, 9)

	// The EXTERNAL variant differs in exactly the client-certificate keys.
	ext := read(t, filepath.Join(root, "configs", "rabbitmq", "rabbitmq-external.conf"))
	for _, line := range []string{
		"ssl_options.fail_if_no_peer_cert = true", "auth_mechanisms.1 = EXTERNAL", "ssl_cert_login_from = common_name",
		"listeners.tcp = none", "ssl_options.verify = verify_peer", "ssl_options.versions.1 = tlsv1.3", "ssl_options.versions.2 = tlsv1.2",
	} {
		assert.Contains(t, ext, "\n"+line+"\n")
	}
	assert.Contains(t, harness, `"ssl_cert_login_from = common_name"`)
	assert.Contains(t, harness, `"auth_mechanisms.2 = EXTERNAL"`)
}

// TestPrometheusRules: the alerting rules of configs/prometheus load
// (promtool check rules) and raise what they say on the series that should
// raise them, and nothing on a healthy daemon's (promtool test rules).
func TestPrometheusRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	require.NoError(t, err, "promtool is missing: make deps installs Debian's prometheus package")
	dir := filepath.Join(repo(t), "configs", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "observerd.rules.yml"},
		{"test", "rules", "observerd.rules.test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
		assert.Contains(t, string(out), "SUCCESS")
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
}
