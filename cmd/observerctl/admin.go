package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/polar/observerd/configs"
)

// adminTimeout bounds a request to the daemon's admin API.
const adminTimeout = 5 * time.Second

// maxAnswer bounds what is read of an answer (a large /v1/state included).
const maxAnswer = 16 << 20

// defaultConfig is where make install puts the daemon's config (a var for
// the tests).
var defaultConfig = "/etc/observerd/observerd.yaml"

// adminAPI is where observerctl reaches the daemon's admin API: loopback
// TCP (admin.listen, read-only) or the unix socket (admin.socket, the
// whole API).
type adminAPI struct {
	base   string // what paths go under
	socket string // the socket's path; "" over TCP
	client *http.Client
}

func overTCP(url string) *adminAPI {
	return &adminAPI{base: strings.TrimSuffix(url, "/"), client: &http.Client{}}
}

func overSocket(path string) *adminAPI {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}
	// The daemon answers only loopback Host names: localhost is one.
	return &adminAPI{base: "http://localhost", socket: path, client: &http.Client{Transport: &http.Transport{DialContext: dial}}}
}

// daemonConfig is the daemon's config: the file given, else the installed
// one when it exists, else the defaults.
func daemonConfig(path string) (*configs.Config, error) {
	if path == "" {
		if _, err := os.Stat(defaultConfig); err != nil {
			return configs.Default(), nil
		}
		path = defaultConfig
	}
	cfg, err := configs.Load(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return cfg, nil
}

// readAPI is where status reads the daemon's state: --socket, --admin,
// else the config's admin.listen, or its admin.socket when admin.listen
// is empty.
func readAPI(socket, url, configPath string) (*adminAPI, error) {
	switch {
	case socket != "":
		return overSocket(socket), nil
	case url != "":
		return overTCP(url), nil
	}
	cfg, err := daemonConfig(configPath)
	switch {
	case err != nil:
		return nil, err
	case cfg.Admin.Listen != "":
		return overTCP("http://" + cfg.Admin.Listen), nil
	case cfg.Admin.Socket != "":
		return overSocket(cfg.Admin.Socket), nil
	}
	return nil, fmt.Errorf("read %s: admin.listen and admin.socket are empty: the daemon serves no state", cfg.File)
}

// commandAPI is where the observer commands go: the socket of --socket,
// else the config's admin.socket.
func commandAPI(socket, configPath string) (*adminAPI, error) {
	if socket != "" {
		return overSocket(socket), nil
	}
	cfg, err := daemonConfig(configPath)
	if err != nil {
		return nil, err
	}
	if cfg.Admin.Socket == "" {
		return nil, fmt.Errorf("read %s: admin.socket is empty: the daemon takes no commands", cfg.File)
	}
	return overSocket(cfg.Admin.Socket), nil
}

// errRefused is an answer other than the one expected, with the daemon's
// reason.
type errRefused struct {
	status string
	reason string
}

func (e *errRefused) Error() string {
	if e.reason == "" {
		return e.status
	}
	return fmt.Sprintf("%s (%s)", e.reason, e.status)
}

// do sends a request and returns the answer's status and body when its
// status is one of ok; any other status is an *errRefused.
func (a *adminAPI) do(ctx context.Context, method, path string, ok ...int) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, nil, a.explain(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, nil, fmt.Errorf("read %s from %s: %w", path, a, err)
	}
	if slices.Contains(ok, resp.StatusCode) {
		return resp.StatusCode, body, nil
	}
	var refusal struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &refusal) != nil || refusal.Error == "" {
		refusal.Error = strings.TrimSpace(string(body))
	}
	return resp.StatusCode, nil, &errRefused{status: resp.Status, reason: refusal.Error}
}

func (a *adminAPI) String() string {
	if a.socket != "" {
		return "the admin socket " + a.socket
	}
	return a.base
}

// explain says what a failed connection means and what to do.
func (a *adminAPI) explain(err error) error {
	if a.socket == "" {
		return fmt.Errorf("%w (is observerd running, with admin.listen there?)", err)
	}
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("permission denied on the admin socket %s: run observerctl as root or as a member of %s (admin.socket_group)",
			a.socket, groupOf(a.socket))
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("no admin socket at %s: is observerd running, with admin.socket there? (--config FILE or --socket PATH names another)", a.socket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("nothing answers on the admin socket %s: is observerd running?", a.socket)
	}
	return fmt.Errorf("ask the admin socket %s: %w", a.socket, err)
}

// groupOf names the group of a file, for a message.
func groupOf(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return "its group"
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return "its group"
	}
	gid := strconv.FormatUint(uint64(sys.Gid), 10)
	if g, err := user.LookupGroupId(gid); err == nil {
		return fmt.Sprintf("its group %q", g.Name)
	}
	return "its group " + gid
}
