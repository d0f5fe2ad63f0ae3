package configs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polar/observerd/configs/yamldoc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// lines renders an error's problems one per line, with dir replaced by $DIR
// so that expectations do not depend on the temporary directory.
func lines(err error, dir string) []string {
	out := yamldoc.Lines(err)
	for i, s := range out {
		if dir != "" {
			out[i] = strings.ReplaceAll(s, dir, "$DIR")
		}
	}
	return out
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), got)
}

func TestExampleLoadsAsDefaults(t *testing.T) {
	c, err := Load("observerd.example.yaml")
	require.NoError(t, err)
	assert.Empty(t, c.Broker.Queues)
	assert.Empty(t, c.AllowedProcessNames)
	assert.Empty(t, c.Labels)
	c.Broker.Queues, c.AllowedProcessNames, c.Labels = nil, nil, nil
	c.File, c.doc = "", nil
	assert.Equal(t, Default(), c)
}

func TestDefaultsApplied(t *testing.T) {
	c, err := Parse("t.yaml", []byte("node: n1\nbroker:\n  queues: [{name: events, bindings: ['#']}]\n"))
	require.NoError(t, err)
	want := Default()
	want.Node = "n1"
	want.Broker.Queues = []Queue{{Name: "events", Type: "quorum", Bindings: []string{"#"}}}
	c.File, c.doc = "", nil
	assert.Equal(t, want, c)

	assert.Equal(t, "/etc/observerd/policies.d", want.PolicyDir)
	assert.Equal(t, "/usr/lib/observerd/plugins", want.PluginDir)
	assert.Equal(t, "/var/lib/observerd", want.StateDir)
	assert.Equal(t, []string{"127.0.0.0/8", "::1/128"}, want.AllowedTargets)
	assert.Equal(t, Log{Level: "info", Format: "json"}, want.Log)
	assert.Equal(t, "127.0.0.1:9464", want.Admin.Listen)
	assert.Equal(t, []string{"amqps://observer@localhost:5671/"}, want.Broker.URLs)
	assert.Equal(t, "plain", want.Broker.Auth)
	assert.Equal(t, "1.2", want.Broker.TLS.MinVersion)
	assert.Equal(t, "polar.events", want.Broker.Exchange)
	assert.Equal(t, "protobuf", want.Broker.Encoding)
	assert.Equal(t, 256, want.Broker.ConfirmWindow)
	assert.Equal(t, yamldoc.Duration(10*time.Second), want.Broker.Heartbeat)
	assert.Equal(t, Outbox{MaxBytes: yamldoc.GiB, WhenFull: "drop_oldest"}, want.Outbox)
}

func TestEmptyNodeMeansHostname(t *testing.T) {
	host, err := os.Hostname()
	require.NoError(t, err)
	for _, doc := range []string{`node: ""`, `node:`, `log: {level: debug}`} {
		c, err := Parse("t.yaml", []byte(doc))
		require.NoError(t, err, doc)
		assert.Equal(t, host, c.Node, doc)
	}
}

func TestBadValues(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"node with a space", `node: "a b"`,
			[]string{`t.yaml:1:7: node: invalid node name: use up to 253 letters, digits, '-', '_' and '.'`}},
		{"node not a string", `node: [a]`,
			[]string{`t.yaml:1:7: node: expected a string, got a list`}},
		{"empty dirs", "policy_dir: ''\nplugin_dir: ''\nstate_dir: ''", []string{
			`t.yaml:1:13: policy_dir: must not be empty`,
			`t.yaml:2:13: plugin_dir: must not be empty`,
			`t.yaml:3:12: state_dir: must not be empty`}},
		{"allowed_targets entries", `allowed_targets: ["10.0.0.0/33", "10.1.2.3/8", "bad host", "fe80::1%eth0"]`, []string{
			`t.yaml:1:19: allowed_targets[0]: invalid CIDR`,
			`t.yaml:1:34: allowed_targets[1]: the CIDR has host bits set; did you mean 10.0.0.0/8?`,
			`t.yaml:1:48: allowed_targets[2]: neither a CIDR, an IP address nor a host name: invalid host name label of 8 bytes`,
			`t.yaml:1:60: allowed_targets[3]: the address has a zone; zones are not supported`}},
		{"allowed_targets not a list", `allowed_targets: 127.0.0.1`,
			[]string{`t.yaml:1:18: allowed_targets: expected a list, got a string of 9 bytes`}},
		{"log level and format", `log: {level: loud, format: xml}`, []string{
			`t.yaml:1:14: log.level: unknown value; use one of: trace, debug, info, warn, error`,
			`t.yaml:1:28: log.format: unknown value; use one of: json, console`}},
		{"log not a mapping", `log: info`,
			[]string{`t.yaml:1:6: log: expected a mapping of keys, got a string of 4 bytes`}},
		{"admin on every interface", `admin: {listen: "0.0.0.0:9464"}`, []string{
			`t.yaml:1:17: admin.listen: not a loopback address; use 127.0.0.1, [::1] or localhost: the network must not reach the admin endpoint`}},
		{"admin without host", `admin: {listen: ":9464"}`, []string{
			`t.yaml:1:17: admin.listen: the address listens on every interface; use 127.0.0.1, [::1] or localhost: the network must not reach the admin endpoint`}},
		{"admin without port", `admin: {listen: "127.0.0.1"}`, []string{
			`t.yaml:1:17: admin.listen: invalid address: want host:port, like 127.0.0.1:9464`}},
		{"admin bad port", `admin: {listen: "[::1]:99999"}`, []string{
			`t.yaml:1:17: admin.listen: invalid port: use 1 to 65535`}},
		{"admin on a name", `admin: {listen: "example.com:80"}`, []string{
			`t.yaml:1:17: admin.listen: not a loopback address; use 127.0.0.1, [::1] or localhost: the network must not reach the admin endpoint`}},
		{"no broker urls", `broker: {urls: []}`,
			[]string{`t.yaml:1:16: broker.urls: at least one URL is required`}},
		{"broker url problems", `broker: {urls: ["http://h/", "amqps:///", "amqps://h:0/", "amqps://h/?heartbeat=5", "amqps://h/%zz", "amqps://u:p@ss@h/"]}`, []string{
			`t.yaml:1:17: broker.urls[0]: unsupported scheme; use amqps:// (or amqp:// with broker.allow_insecure: true)`,
			`t.yaml:1:30: broker.urls[1]: the URL has no host`,
			`t.yaml:1:43: broker.urls[2]: invalid port: use 1 to 65535`,
			`t.yaml:1:59: broker.urls[3]: query parameters are not supported; use the broker.* keys (tls, heartbeat, auth)`,
			`t.yaml:1:85: broker.urls[4]: invalid URL`,
			`t.yaml:1:102: broker.urls[5]: the URL holds a password; secrets go in broker.password_file or the OBSERVERD_AMQP_PASSWORD environment variable, never in the config`}},
		{"allow_insecure not a bool", `broker: {allow_insecure: "yes"}`,
			[]string{`t.yaml:1:26: broker.allow_insecure: expected true or false, got a string of 3 bytes`}},
		{"url_order", `broker: {url_order: random}`,
			[]string{`t.yaml:1:21: broker.url_order: unknown value; use one of: spread, listed`}},
		{"auth", `broker: {auth: kerberos}`,
			[]string{`t.yaml:1:16: broker.auth: unknown value; use one of: plain, external`}},
		{"auth external without certificate", `broker: {auth: external}`,
			[]string{`t.yaml:1:16: broker.auth: external authentication uses a client certificate: set broker.tls.cert_file and broker.tls.key_file`}},
		{"tls versions", "broker:\n  tls:\n    min_version: 1.1", []string{
			`t.yaml:3:18: broker.tls.min_version: TLS 1.1 is obsolete and insecure (RFC 8996); use "1.2" or "1.3"`}},
		{"tls version unknown", "broker: {tls: {min_version: '2'}}", []string{
			`t.yaml:1:29: broker.tls.min_version: unknown TLS version; use "1.2" or "1.3"`}},
		{"tls server name", "broker: {tls: {server_name: 'a b'}}", []string{
			`t.yaml:1:29: broker.tls.server_name: invalid host name label of 3 bytes`}},
		{"exchange names", "broker:\n  exchange: amq.topic", []string{
			`t.yaml:2:13: broker.exchange: invalid name: names starting with amq. are reserved by the broker`}},
		{"exchange empty", "broker:\n  exchange: ''", []string{
			`t.yaml:2:13: broker.exchange: must not be empty`}},
		{"exchange charset", "broker:\n  exchange: 'a b'", []string{
			`t.yaml:2:13: broker.exchange: invalid name: use up to 255 letters, digits, '-', '_', '.' and ':'`}},
		{"encoding", `broker: {encoding: xml}`,
			[]string{`t.yaml:1:20: broker.encoding: unknown value; use one of: protobuf, json`}},
		{"confirm window", "broker:\n  confirm_window: 0", []string{
			`t.yaml:2:19: broker.confirm_window: must be between 1 and 65535, got 0`}},
		{"confirm window large", "broker:\n  confirm_window: 70000", []string{
			`t.yaml:2:19: broker.confirm_window: must be between 1 and 65535, got 70000`}},
		{"confirm window type", "broker:\n  confirm_window: many", []string{
			`t.yaml:2:19: broker.confirm_window: expected an integer, got a string of 4 bytes`}},
		{"confirm window overflow", "broker:\n  confirm_window: 99999999999999999999", []string{
			`t.yaml:2:19: broker.confirm_window: expected an integer, got a number`}},
		{"heartbeat zero", "broker:\n  heartbeat: 0s", []string{
			`t.yaml:2:14: broker.heartbeat: must be at least 1s (heartbeats detect a dead connection and cannot be disabled), got 0s`}},
		{"heartbeat fraction", "broker:\n  heartbeat: 1500ms", []string{
			`t.yaml:2:14: broker.heartbeat: AMQP counts heartbeats in whole seconds, got 1.5s`}},
		{"heartbeat too long", "broker:\n  heartbeat: 24h", []string{
			`t.yaml:2:14: broker.heartbeat: must be at most 65535s, got 24h0m0s`}},
		{"heartbeat unparsable", "broker:\n  heartbeat: 5x", []string{
			`t.yaml:2:14: broker.heartbeat: invalid duration: use a number and a unit (ns, us, ms, s, m, h), like 250ms, 5s or 1m30s`}},
		{"heartbeat without unit", "broker:\n  heartbeat: 5", []string{
			`t.yaml:2:14: broker.heartbeat: invalid duration: use a number and a unit (ns, us, ms, s, m, h), like 250ms, 5s or 1m30s`}},
		{"heartbeat not a scalar", "broker:\n  heartbeat: [5s]", []string{
			`t.yaml:2:14: broker.heartbeat: expected a duration like 5s, got a list`}},
		{"queues", "broker:\n  queues:\n  - {name: q, bindings: ['a..b', 'a#', '']}\n  - {name: q, type: lazy}\n  - {bindings: ['#']}", []string{
			`t.yaml:3:26: broker.queues[0].bindings[0]: invalid topic pattern: empty word (two dots in a row, or a dot at an end)`,
			`t.yaml:3:34: broker.queues[0].bindings[1]: invalid topic pattern: * and # must stand alone between dots, as in observation.* or observation.#`,
			`t.yaml:3:40: broker.queues[0].bindings[2]: empty topic pattern`,
			`t.yaml:4:12: broker.queues[1].name: duplicate queue name; first at line 3:12`,
			`t.yaml:4:21: broker.queues[1].type: unknown value; use one of: quorum, classic`,
			`t.yaml:5:5: broker.queues[2].name: must not be empty`}},
		{"outbox too small", `outbox: {max_bytes: 10kB}`,
			[]string{`t.yaml:1:21: outbox.max_bytes: must be at least 1MiB, got 10kB`}},
		{"outbox sizes", "outbox:\n  max_bytes: lots", []string{
			`t.yaml:2:14: outbox.max_bytes: invalid byte size: use a non-negative number and a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), like 64KiB or 1GiB`}},
		{"outbox negative", "outbox:\n  max_bytes: -5", []string{
			`t.yaml:2:14: outbox.max_bytes: invalid byte size: use a non-negative number and a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), like 64KiB or 1GiB`}},
		{"outbox unit", "outbox:\n  max_bytes: 5PB", []string{
			`t.yaml:2:14: outbox.max_bytes: invalid byte size: unknown unit; use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB`}},
		{"when_full", `outbox: {when_full: wait}`,
			[]string{`t.yaml:1:21: outbox.when_full: unknown value; use one of: drop_oldest, block`}},
		{"unknown keys at several depths", "nod: x\nlog:\n  colour: red\nbroker:\n  tls:\n    min_versoin: '1.3'\n  queues:\n  - nmae: q\n    name: q\n  wat: 1", []string{
			`t.yaml:1:1: nod: unknown key "nod" (did you mean "node"?)`,
			`t.yaml:3:3: log.colour: unknown key "colour"; valid keys: format, level`,
			`t.yaml:6:5: broker.tls.min_versoin: unknown key "min_versoin" (did you mean "min_version"?)`,
			`t.yaml:8:5: broker.queues[0].nmae: unknown key "nmae" (did you mean "name"?)`,
			`t.yaml:10:3: broker.wat: unknown key "wat"; valid keys: allow_insecure, auth, confirm_window, encoding, exchange, heartbeat, password_file, queues, tls, url_order, urls`}},
		{"duplicate key", "node: a\nlog: {level: info, level: debug}\nnode: b", []string{
			`t.yaml:2:20: log.level: duplicate key "level" (first at line 2:7)`,
			`t.yaml:3:1: node: duplicate key "node" (first at line 1:1)`}},
		{"mapping expected", `broker: [1]`,
			[]string{`t.yaml:1:9: broker: expected a mapping of keys, got a list`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			require.Error(t, err)
			assert.Equal(t, tt.want, lines(err, ""))
		})
	}
}

func TestUnreadableDocuments(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"empty", "", "t.yaml: the document is empty"},
		{"only comments", "# nothing\n\n", "t.yaml: the document is empty"},
		{"null", "~\n", "t.yaml: the document is empty"},
		{"a list", "- a\n- b\n", "t.yaml:1:1: the document must be a mapping of keys to values, not a list"},
		{"a scalar", "hello\n", `t.yaml:1:1: the document must be a mapping of keys to values, not a string of 5 bytes`},
		{"two documents", "node: a\n---\nnode: b\n", "t.yaml:2: a second YAML document starts here; a file holds exactly one"},
		{"syntax error", "node: a\n  log: b\n", "t.yaml:2: invalid YAML: mapping values are not allowed in this context"},
		{"unclosed flow", "log: {level: info\n", "t.yaml:2: invalid YAML: did not find expected ',' or '}'"},
		{"tab indentation", "log:\n\tlevel: info\n", "t.yaml:2: invalid YAML: found character that cannot start any token"},
		{"NUL byte", "node: a\n\x00\x01\x02", "t.yaml:2: not a text file: it contains a NUL byte"},
		{"invalid UTF-8", "node: a\nnode: \xff\xfe", "t.yaml:2: not a text file: it is not valid UTF-8"},
		{"unknown anchor", "node: *x\n", "t.yaml: invalid YAML: unknown anchor \u2026 referenced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			require.Error(t, err)
			assert.Equal(t, []string{tt.want}, lines(err, ""))
		})
	}
}

func TestPlaintextURL(t *testing.T) {
	_, err := Parse("t.yaml", []byte(`broker: {urls: ["amqp://observer@localhost:5672/"]}`))
	assert.Equal(t, []string{`t.yaml:1:17: broker.urls[0]: amqp:// is not encrypted: the password and every event would cross the network in plaintext; use amqps://, or set broker.allow_insecure: true to accept that`},
		lines(err, ""))

	c, err := Parse("t.yaml", []byte(`broker: {allow_insecure: true, urls: ["amqp://observer@localhost:5672/"]}`))
	require.NoError(t, err)
	assert.Equal(t, []string{"amqp://observer@localhost:5672/"}, c.Broker.URLs)
}

func TestPasswordInURL(t *testing.T) {
	_, err := Parse("t.yaml", []byte("broker:\n  urls:\n  - amqps://observer:hunter2@localhost:5671/\n"))
	msg := lines(err, "")
	assert.Equal(t, []string{`t.yaml:3:5: broker.urls[0]: the URL holds a password; secrets go in broker.password_file or the OBSERVERD_AMQP_PASSWORD environment variable, never in the config`}, msg)
	assert.NotContains(t, err.Error(), "hunter2")
}

func TestFilesMustBeReadable(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "observerd.yaml")
	doc := `
broker:
  password_file: missing.pw
  tls:
    ca_file: /nonexistent/ca.pem
    cert_file: .
    key_file: ` + dir + `/key.pem
`
	_, err := Parse(config, []byte(doc))
	assert.Equal(t, []string{
		`$DIR/observerd.yaml:3:18: broker.password_file: cannot read $DIR/missing.pw: no such file or directory`,
		`$DIR/observerd.yaml:5:14: broker.tls.ca_file: cannot read /nonexistent/ca.pem: no such file or directory`,
		`$DIR/observerd.yaml:6:16: broker.tls.cert_file: $DIR is a directory, not a file`,
		`$DIR/observerd.yaml:7:15: broker.tls.key_file: cannot read $DIR/key.pem: no such file or directory`,
	}, lines(err, dir))
}

func TestCertificateNeedsKey(t *testing.T) {
	pki := newPKI(t)
	_, err := Parse("t.yaml", []byte("broker:\n  tls:\n    cert_file: "+pki.cert+"\n"))
	assert.Equal(t, []string{`t.yaml:2:3: broker.tls.key_file: required when broker.tls.cert_file is set`}, lines(err, ""))
	_, err = Parse("t.yaml", []byte("broker:\n  tls: {key_file: "+pki.key+"}\n"))
	assert.Equal(t, []string{`t.yaml:2:3: broker.tls.cert_file: required when broker.tls.key_file is set`}, lines(err, ""))
}

func TestBadPEM(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	require.NoError(t, os.WriteFile(junk, []byte("not PEM\n"), 0o600))
	_, err := Parse("t.yaml", []byte("broker:\n  tls:\n    ca_file: "+junk+"\n    cert_file: "+junk+"\n    key_file: "+junk+"\n"))
	assert.Equal(t, []string{
		`t.yaml:3:14: broker.tls.ca_file: no PEM certificate found in $DIR/junk.pem`,
		`t.yaml:4:16: broker.tls.cert_file: load client certificate $DIR/junk.pem and key $DIR/junk.pem: tls: failed to find any PEM data in certificate input`,
	}, lines(err, dir))
}

func TestRelativePathsFollowTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pw"), []byte("s3cret\n"), 0o600))
	c, err := Parse(filepath.Join(dir, "observerd.yaml"), []byte(
		"policy_dir: policies\nplugin_dir: ./plugins\nstate_dir: /srv/state\nbroker: {password_file: pw}\n"))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "policies"), c.PolicyDir)
	assert.Equal(t, filepath.Join(dir, "plugins"), c.PluginDir)
	assert.Equal(t, "/srv/state", c.StateDir)
	assert.Equal(t, filepath.Join(dir, "pw"), c.Broker.PasswordFile)
}

func TestPassword(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pw, []byte("s3cret\r\n"), 0o600))

	b := Default().Broker
	got, err := b.Password("from-env")
	require.NoError(t, err)
	assert.Equal(t, "from-env", got)

	b.PasswordFile = pw // the file wins over the environment
	got, err = b.Password("from-env")
	require.NoError(t, err)
	assert.Equal(t, "s3cret", got)

	// Read afresh at every call: a rotated password needs no restart.
	require.NoError(t, os.WriteFile(pw, []byte("rotated\n"), 0o600))
	got, err = b.Password("from-env")
	require.NoError(t, err)
	assert.Equal(t, "rotated", got)

	b.PasswordFile = filepath.Join(dir, "gone")
	_, err = b.Password("")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "read broker.password_file: open "+filepath.Join(dir, "gone"))

	b.PasswordFile = ""
	got, err = b.Password("")
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestTakePasswordEnv(t *testing.T) {
	t.Setenv(PasswordEnv, "from-env")
	assert.Equal(t, "from-env", TakePasswordEnv())
	_, set := os.LookupEnv(PasswordEnv)
	assert.False(t, set, "the password stays in the environment")
}

func TestSecretFileModes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o640, true}, {0o440, true},
		{0o660, false}, {0o644, false}, {0o604, false}, {0o602, false}, {0o601, false}, {0o620, false},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			pw := filepath.Join(dir, "pw-"+tc.mode.String())
			require.NoError(t, os.WriteFile(pw, []byte("s3cret"), 0o600))
			require.NoError(t, os.Chmod(pw, tc.mode))
			_, err := ReadSecret(pw)
			c, perr := Parse("", []byte("broker: {password_file: "+pw+"}\n"))
			if tc.ok {
				require.NoError(t, err)
				require.NoError(t, perr)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), pw+" has mode 0"+strings.TrimPrefix(fmt.Sprintf("%o", tc.mode.Perm()), "0"))
			assert.NotContains(t, err.Error(), "s3cret")
			require.Error(t, perr)
			assert.Contains(t, perr.Error(), "broker.password_file: "+pw+" has mode")
			assert.NotNil(t, c)
		})
	}
	t.Run("owned by another user", func(t *testing.T) {
		pw := filepath.Join(dir, "pw-foreign")
		require.NoError(t, os.WriteFile(pw, []byte("s3cret"), 0o600))
		require.NoError(t, os.Chown(pw, 65534, 65534)) // the tests run as root
		_, err := ReadSecret(pw)
		require.Error(t, err)
		assert.Equal(t, pw+" is owned by uid 65534: a secret must be owned by root or by the user that reads it (uid 0)", err.Error())
	})
	t.Run("not a regular file", func(t *testing.T) {
		_, err := ReadSecret(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "not a regular file")
	})
	t.Run("too large", func(t *testing.T) {
		big := filepath.Join(dir, "big")
		require.NoError(t, os.WriteFile(big, make([]byte, 65<<10), 0o600))
		_, err := ReadSecret(big)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "larger than 64KiB")
	})
}

// Every file the config names is read with a bound: a device or a FIFO
// fails the check instead of filling memory or hanging it.
func TestConfigFilesAreBounded(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	big := filepath.Join(dir, "big.pem")
	f, err := os.Create(big)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(5<<20))
	require.NoError(t, f.Close())
	for _, tc := range []struct{ key, file, want string }{
		{"ca_file", "/dev/zero", "broker.tls.ca_file: read CA file: /dev/zero is not a regular file"},
		{"ca_file", fifo, "broker.tls.ca_file: read CA file: $DIR/fifo is not a regular file"},
		{"ca_file", big, "broker.tls.ca_file: read CA file: $DIR/big.pem is larger than 4MiB; this is not a certificate file"},
	} {
		t.Run(tc.key+" "+filepath.Base(tc.file), func(t *testing.T) {
			_, err := Parse("t.yaml", []byte("broker: {tls: {"+tc.key+": "+tc.file+"}}\n"))
			require.Error(t, err)
			assert.Equal(t, []string{"t.yaml:1:" + map[string]string{"ca_file": "25"}[tc.key] + ": " + tc.want}, lines(err, dir))
		})
	}
	_, err = Parse("t.yaml", []byte("broker: {password_file: "+fifo+"}\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "broker.password_file: "+fifo+" is not a regular file")

	// The config file itself, and a secret too large, are caught before
	// the daemon would start on them.
	_, err = Load(fifo)
	require.Error(t, err)
	assert.Equal(t, fifo+": not a regular file; this is not a config file", err.Error())
	big = filepath.Join(dir, "big.password")
	require.NoError(t, os.WriteFile(big, make([]byte, 65<<10), 0o600))
	_, err = Parse("t.yaml", []byte("broker: {password_file: "+big+"}\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "broker.password_file: "+big+" is larger than 64KiB; this is not a secret file")
}

func TestMixedSchemesRefused(t *testing.T) {
	_, err := Parse("", []byte("broker: {allow_insecure: true, urls: [\"amqps://a/\", \"amqp://b/\"]}\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "broker.urls: mixes amqps:// and amqp://")
	_, err = Parse("", []byte("broker: {allow_insecure: true, urls: [\"amqp://a/\", \"amqp://b/\"]}\n"))
	require.NoError(t, err)
}

func TestSeveralProblemsAtOnce(t *testing.T) {
	data, err := os.ReadFile("testdata/many-problems.yaml")
	require.NoError(t, err)
	_, err = Parse("testdata/many-problems.yaml", data)
	require.Error(t, err)
	got := strings.Join(lines(err, ""), "\n") + "\n"
	golden(t, "many-problems.golden", got)
	assert.GreaterOrEqual(t, len(yamldoc.ProblemsOf(err)), 10)
}

func TestValidateWithoutDocument(t *testing.T) {
	c := Default()
	c.Node = ""
	c.Outbox.WhenFull = "never"
	assert.Equal(t, []string{
		"node: the host name is unknown; set node",
		`outbox.when_full: unknown value; use one of: drop_oldest, block`,
	}, lines(c.Validate(), ""))
	// Validate is repeatable: it does not accumulate.
	assert.Len(t, yamldoc.ProblemsOf(c.Validate()), 2)
}

func TestLoad(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "load config: open ")

	big := filepath.Join(t.TempDir(), "big.yaml")
	require.NoError(t, os.WriteFile(big, make([]byte, maxConfigSize+1), 0o600))
	_, err = Load(big)
	assert.EqualError(t, err, big+": the file is larger than 1MiB; this is not a config file")
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"amqps://observer:hunter2@localhost:5671/", "amqps://observer:xxxxx@localhost:5671/"},
		{"amqps://observer@localhost:5671/", "amqps://observer@localhost:5671/"},
		{"amqps://localhost/vhost", "amqps://localhost/vhost"},
		{"amqps://u:p@ss/w@host/", "amqps://u:xxxxx@host/"}, // ambiguous: redacted up to the last @
		{"amqps://u:p%zz@host/", "amqps://u:xxxxx@host/"},   // bad escape in the password
		{"amqp:u:pw@host", "amqp:u:xxxxx@host"},             // opaque form
		{"not a url", "not a url"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, RedactURL(tt.in), tt.in)
	}
}

// pki is a throw-away CA with a client certificate, written as PEM files.
type pki struct{ ca, cert, key string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return path
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "observer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return pki{ca: write("ca.pem", "CERTIFICATE", caDER), cert: write("client.pem", "CERTIFICATE", der), key: write("client.key", "PRIVATE KEY", keyDER)}
}

func TestClientTLS(t *testing.T) {
	pki := newPKI(t)
	c, err := Parse("t.yaml", []byte(`
broker:
  auth: external
  tls: {ca_file: `+pki.ca+`, cert_file: `+pki.cert+`, key_file: `+pki.key+`, server_name: rabbit.internal, min_version: "1.3"}
`))
	require.NoError(t, err)
	cfg, err := c.Broker.ClientTLS()
	require.NoError(t, err)
	assert.Equal(t, uint16(tls.VersionTLS13), cfg.MinVersion)
	assert.Equal(t, "rabbit.internal", cfg.ServerName)
	assert.False(t, cfg.InsecureSkipVerify)
	require.Len(t, cfg.Certificates, 1)
	leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	require.NoError(t, err)
	assert.Equal(t, "observer", leaf.Subject.CommonName)
	// The CA pool verifies the client certificate, so it holds our CA.
	_, err = leaf.Verify(x509.VerifyOptions{Roots: cfg.RootCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	assert.NoError(t, err)

	def, err := Default().Broker.ClientTLS()
	require.NoError(t, err)
	assert.Equal(t, uint16(tls.VersionTLS12), def.MinVersion)
	assert.Empty(t, def.ServerName, "left to amqp091-go, which uses the URL's host")
	assert.Empty(t, def.Certificates)
	assert.NotNil(t, def.RootCAs, "the system pool")
	assert.False(t, def.InsecureSkipVerify)

	b := Default().Broker
	b.TLS.MinVersion = "1.0"
	_, err = b.ClientTLS()
	assert.EqualError(t, err, `configure broker tls: TLS 1.0 is obsolete and insecure (RFC 8996); use "1.2" or "1.3"`)
	b = Default().Broker
	b.TLS.CAFile = filepath.Join(t.TempDir(), "none.pem")
	_, err = b.ClientTLS()
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// ClientTLS reads the CA, certificate and key afresh at every call: the
// broker calls it at every dial, so rotated files need no restart.
func TestClientTLSRereadsRotatedFiles(t *testing.T) {
	old, rotated := newPKI(t), newPKI(t)
	b := Default().Broker
	b.TLS = TLS{CAFile: old.ca, CertFile: old.cert, KeyFile: old.key, MinVersion: "1.2"}
	before, err := b.ClientTLS()
	require.NoError(t, err)
	for _, f := range []struct{ from, to string }{{rotated.ca, old.ca}, {rotated.cert, old.cert}, {rotated.key, old.key}} {
		require.NoError(t, os.Rename(f.from, f.to)) // as an operator rotates: a new file renamed over the old
	}
	after, err := b.ClientTLS()
	require.NoError(t, err)
	assert.NotEqual(t, before.Certificates[0].Certificate[0], after.Certificates[0].Certificate[0], "the new certificate")
	leaf, err := x509.ParseCertificate(after.Certificates[0].Certificate[0])
	require.NoError(t, err)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: after.RootCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	assert.NoError(t, err, "the new CA, which signed the new certificate")
	_, err = leaf.Verify(x509.VerifyOptions{Roots: before.RootCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	assert.Error(t, err, "not the old CA")
}

func TestTargets(t *testing.T) {
	c, err := Parse("t.yaml", []byte(`allowed_targets: ["10.0.0.0/8", "db.internal"]`))
	require.NoError(t, err)
	a := c.Targets()
	assert.True(t, a.AllowsHost("10.1.2.3"))
	assert.True(t, a.AllowsHost("DB.internal."))
	assert.False(t, a.AllowsHost("127.0.0.1"))
	assert.Equal(t, "[10.0.0.0/8 db.internal]", a.String())
}

func TestChanges(t *testing.T) {
	base := "node: n1\nlog: {level: info}\nbroker:\n  confirm_window: 10\n  tls: {min_version: \"1.2\"}\n"
	tests := []struct {
		name, next string
		want       []string
	}{
		{"same document", base, nil},
		{"comment and order only", "# c\nbroker:\n  tls: {min_version: \"1.2\"}\n  confirm_window: 10\nlog: {level: info}\nnode: n1\n", nil},
		{"log level", "node: n1\nlog: {level: debug}\nbroker:\n  confirm_window: 10\n  tls: {min_version: \"1.2\"}\n", []string{"log.level"}},
		{"nested and top level", "node: n2\nlog: {level: info}\nbroker:\n  confirm_window: 11\n  tls: {min_version: \"1.3\"}\n",
			[]string{"node", "broker.tls.min_version", "broker.confirm_window"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Parse("t.yaml", []byte(base))
			require.NoError(t, err)
			b, err := Parse("t.yaml", []byte(tt.next))
			require.NoError(t, err)
			assert.ElementsMatch(t, tt.want, a.Changes(b))
		})
	}
}

func TestParseReturnsTheConfigWithItsProblems(t *testing.T) {
	c, err := Parse("t.yaml", []byte("policy_dir: /p\nbroker: {confirm_window: 0}\n"))
	require.Error(t, err)
	require.NotNil(t, c, "a checker can go on with the policies")
	assert.Equal(t, "/p", c.PolicyDir)
	c, err = Parse("t.yaml", []byte("\x00\x01 not yaml"))
	require.Error(t, err)
	assert.Nil(t, c)
}

func TestControlValues(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"labels", "labels: [web, Web, 'a b', web, '-x']", []string{
			`t.yaml:1:15: labels[1]: invalid label: use up to 63 lower-case letters, digits, '-' and '_', beginning and ending with a letter or digit`,
			`t.yaml:1:20: labels[2]: invalid label: use up to 63 lower-case letters, digits, '-' and '_', beginning and ending with a letter or digit`,
			`t.yaml:1:27: labels[3]: duplicate label "web"`,
			`t.yaml:1:32: labels[4]: invalid label: use up to 63 lower-case letters, digits, '-' and '_', beginning and ending with a letter or digit`}},
		{"enabled without users", "control: {enabled: true}", []string{
			`t.yaml:1:20: control.enabled: the control channel is enabled but control.allow names no user: every command would be refused`}},
		{"unknown commands and users", "control:\n  allow:\n    ops: [pause, reboot]\n    'bad user': [get_state]", []string{
			`t.yaml:2:3: control.allow.bad user: invalid broker user name: use letters, digits, '.', '_', '@' and '-'`,
			`t.yaml:3:18: control.allow.ops[1]: unknown command; use one of: observe_now, pause, resume, get_state, apply_policy, remove_policy`}},
		{"rate", "control: {max_commands_per_second: 0}", []string{
			`t.yaml:1:36: control.max_commands_per_second: must be more than 0 and at most 1000`}},
		{"every problem at once", "labels: [A]\ncontrol:\n  enabled: true\n  max_commands_per_second: 5000\n  allow: {ops: [halt]}", []string{
			`t.yaml:1:10: labels[0]: invalid label: use up to 63 lower-case letters, digits, '-' and '_', beginning and ending with a letter or digit`,
			`t.yaml:4:28: control.max_commands_per_second: must be more than 0 and at most 1000`,
			`t.yaml:5:17: control.allow.ops[0]: unknown command; use one of: observe_now, pause, resume, get_state, apply_policy, remove_policy`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			require.Error(t, err)
			assert.Equal(t, tt.want, lines(err, ""))
		})
	}
}

func TestControlKeys(t *testing.T) {
	c, err := Parse("t.yaml", []byte("node: web-1\nlabels: [web, eu]\ncontrol: {enabled: true, allow: {ops: [get_state]}}"))
	require.NoError(t, err)
	assert.Equal(t, []string{"node.web-1", "all", "group.web", "group.eu"}, c.ControlKeys())
	assert.Equal(t, "polar.control.web-1", ControlQueue(c.Node))
}
