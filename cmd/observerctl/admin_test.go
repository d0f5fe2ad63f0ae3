package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/asuser"
)

// shortDir is a directory for sockets: t.TempDir() can be too long for a
// socket's path (at most 107 bytes).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serveSocket serves h on a unix socket and returns its path.
func serveSocket(t *testing.T, h http.Handler) string {
	t.Helper()
	path := filepath.Join(shortDir(t), "admin.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return path
}

func TestWhereTheCommandsGo(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
		return path
	}
	relative := write("relative.yaml", "admin: {socket: run/admin.sock}\n")
	absolute := write("absolute.yaml", "admin: {socket: /srv/observerd/admin.sock}\n")
	none := write("none.yaml", "admin: {socket: \"\"}\n")
	tcpOnly := write("tcp-only.yaml", "admin: {listen: \"127.0.0.1:9555\", socket: \"\"}\n")
	socketOnly := write("socket-only.yaml", "admin: {listen: \"\", socket: /srv/observerd/admin.sock}\n")
	missing := filepath.Join(dir, "missing.yaml")

	tests := []struct {
		name          string
		installed     string // what defaultConfig points at
		socket, admin string
		config        string
		command       string // the socket commands use; "" when err
		status        string // where status reads: a socket's path or a URL
		err           string
	}{
		{name: "nothing given, nothing installed: the defaults", installed: missing,
			command: "/run/observerd/admin.sock", status: "http://127.0.0.1:9464"},
		{name: "nothing given: the installed config", installed: absolute,
			command: "/srv/observerd/admin.sock", status: "http://127.0.0.1:9464"},
		{name: "--config, relative to its file", installed: absolute, config: relative,
			command: filepath.Join(dir, "run/admin.sock"), status: "http://127.0.0.1:9464"},
		{name: "--socket wins", installed: absolute, config: relative, socket: "/x/admin.sock",
			command: "/x/admin.sock", status: "/x/admin.sock"},
		{name: "--admin is for status only", installed: missing, admin: "http://127.0.0.1:1/",
			command: "/run/observerd/admin.sock", status: "http://127.0.0.1:1"},
		{name: "status over the socket when admin.listen is empty", installed: missing, config: socketOnly,
			command: "/srv/observerd/admin.sock", status: "/srv/observerd/admin.sock"},
		{name: "no socket in the config", installed: missing, config: tcpOnly,
			status: "http://127.0.0.1:9555", err: "read " + tcpOnly + ": admin.socket is empty: the daemon takes no commands"},
		{name: "no socket in the installed config", installed: none,
			status: "http://127.0.0.1:9464", err: "read " + none + ": admin.socket is empty: the daemon takes no commands"},
		{name: "a config that cannot be read", installed: missing, config: missing, err: "read " + missing + ": load config: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			installed := defaultConfig
			defaultConfig = tt.installed
			t.Cleanup(func() { defaultConfig = installed })

			api, err := commandAPI(tt.socket, tt.config)
			if tt.command == "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
			} else {
				require.NoError(t, err)
				assert.Equal(t, tt.command, api.socket)
			}
			api, err = readAPI(tt.socket, tt.admin, tt.config)
			if tt.status == "" {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			if strings.HasPrefix(tt.status, "http://") {
				assert.Equal(t, tt.status, api.base)
				assert.Empty(t, api.socket)
			} else {
				assert.Equal(t, tt.status, api.socket)
			}
		})
	}
}

// fakeDaemon answers commands as the daemon does, by the observer's name:
// "gone" is not done (409), "limited" is over the rate (429), "stranger"
// is refused as an unauthorized peer would be (403).
// It records each command's Host and path.
func fakeDaemon(t *testing.T, got *requests) http.Handler {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/observers/{policy}/{observer}/{command}", func(w http.ResponseWriter, r *http.Request) {
		got.add(r.Host + " " + r.URL.EscapedPath())
		target := r.PathValue("policy") + "/" + r.PathValue("observer")
		w.Header().Set("Content-Type", "application/json")
		switch r.PathValue("observer") {
		case "gone":
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(&messages.CommandResult{Command: r.PathValue("command"), Target: target, Message: `policy "web" has no observer "gone"`})
		case "limited":
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error": "too many commands: at most 10 a second (bursts of 20); retry in a second"}`))
		case "stranger":
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"error": "uid 1001 may not use the admin socket"}`))
		default:
			_ = json.NewEncoder(w).Encode(&messages.CommandResult{Command: r.PathValue("command"), Target: target, Ok: true})
		}
	})
	mux.HandleFunc("GET /v1/state", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(snapshotAt(time.Now()))
	})
	return mux
}

// requests are what a fakeDaemon was sent.
type requests struct {
	mu   sync.Mutex
	list []string
}

func (r *requests) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, s)
}

func (r *requests) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.list)
}

func TestCommands(t *testing.T) {
	var got requests
	socket := serveSocket(t, fakeDaemon(t, &got))
	tests := []struct {
		name     string
		args     []string
		code     int
		out, err string
	}{
		{name: "done", args: []string{"pause", "--socket", socket, "web/health"}, code: exitOK, out: "pause web/health: done\n"},
		{name: "flags after the argument", args: []string{"resume", "web/health", "--socket", socket}, code: exitOK, out: "resume web/health: done\n"},
		{name: "not done", args: []string{"resume", "--socket", socket, "web/gone"}, code: exitProblems,
			err: "observerctl resume web/gone: policy \"web\" has no observer \"gone\"\n"},
		{name: "over the rate", args: []string{"observe", "--socket", socket, "web/limited"}, code: exitProblems,
			err: "observerctl observe web/limited: too many commands: at most 10 a second (bursts of 20); retry in a second (429 Too Many Requests)\n"},
		{name: "refused peer", args: []string{"pause", "--socket", socket, "web/stranger"}, code: exitProblems,
			err: "observerctl pause web/stranger: uid 1001 may not use the admin socket (403 Forbidden)\n"},
		{name: "no target", args: []string{"pause", "--socket", socket}, code: exitUsage, err: "usage: observerctl pause [--socket PATH | --config FILE] POLICY/OBSERVER\n"},
		{name: "--admin takes no commands", args: []string{"pause", "--admin", "http://127.0.0.1:9464", "web/health"}, code: exitUsage,
			err: "commands go through the admin socket, not the read-only admin URL: use --socket PATH or --config FILE"},
		{name: "--admin after the argument says so too", args: []string{"resume", "web/health", "--admin", "http://127.0.0.1:9464"}, code: exitUsage,
			err: "commands go through the admin socket, not the read-only admin URL: use --socket PATH or --config FILE"},
		{name: "flags on both sides", args: []string{"pause", "--config", "/nonexistent.yaml", "web/health", "--socket", socket}, code: exitOK,
			out: "pause web/health: done\n"},
		{name: "status over the socket", args: []string{"status", "--socket", socket}, code: exitOK, out: "ready:     yes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			assert.Equal(t, tt.code, code, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			assert.Contains(t, stdout.String(), tt.out)
			if tt.err != "" && strings.HasSuffix(tt.err, "\n") {
				assert.Equal(t, tt.err, stderr.String())
			} else {
				assert.Contains(t, stderr.String(), tt.err)
			}
		})
	}
	assert.Equal(t, []string{
		"localhost /v1/observers/web/health/pause", "localhost /v1/observers/web/health/resume", "localhost /v1/observers/web/gone/resume",
		"localhost /v1/observers/web/limited/observe", "localhost /v1/observers/web/stranger/pause", "localhost /v1/observers/web/health/pause",
	}, got.get())
}

func TestCommandsWithoutADaemon(t *testing.T) {
	missing := filepath.Join(shortDir(t), "admin.sock")
	// What a killed daemon leaves: a socket nothing serves.
	stale := filepath.Join(shortDir(t), "admin.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	require.NoError(t, err)
	ln.SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())

	for _, tt := range []struct{ name, socket, err string }{
		{"no socket", missing, "observerctl pause web/health: no admin socket at " + missing +
			": is observerd running, with admin.socket there? (--config FILE or --socket PATH names another)\n"},
		{"a stale socket", stale, "observerctl pause web/health: nothing answers on the admin socket " + stale + ": is observerd running?\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"pause", "--socket", tt.socket, "web/health"}, &stdout, &stderr)
			assert.Equal(t, exitProblems, code)
			assert.Equal(t, tt.err, stderr.String())
		})
	}
}

// TestHelperObserverctl runs observerctl with the arguments of
// OBSERVERCTL_ARGS (JSON) as another user, for TestPermissionDenied.
func TestHelperObserverctl(t *testing.T) {
	if !asuser.Child() {
		t.Skip("observerctl run as another user by TestPermissionDenied")
	}
	var args []string
	require.NoError(t, json.Unmarshal([]byte(os.Getenv("OBSERVERCTL_ARGS")), &args))
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	asuser.Report(t, map[string]any{"code": code, "stdout": stdout.String(), "stderr": stderr.String()})
}

// TestPermissionDenied: a user outside the socket's group is told what to
// do, as the kernel refuses the connection.
func TestPermissionDenied(t *testing.T) {
	var got requests
	socket := serveSocket(t, fakeDaemon(t, &got))
	require.NoError(t, os.Chmod(filepath.Dir(socket), 0o755))
	require.NoError(t, os.Chmod(socket, 0o660))
	require.NoError(t, os.Chown(socket, 0, 0))
	args, err := json.Marshal([]string{"pause", "--socket", socket, "web/health"})
	require.NoError(t, err)
	var res struct {
		Code           int
		Stdout, Stderr string
	}
	asuser.Result(t, asuser.Command(t, 65534, 65534, "TestHelperObserverctl", "OBSERVERCTL_ARGS="+string(args)), &res)
	assert.Equal(t, exitProblems, res.Code)
	assert.Equal(t, "observerctl pause web/health: permission denied on the admin socket "+socket+
		": run observerctl as root or as a member of its group \"root\" (admin.socket_group)\n", res.Stderr)
	assert.Empty(t, got.get())
}
