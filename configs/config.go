// Package configs loads and validates the daemon configuration
// (observerd.yaml, see docs/operations.md), decoded strictly by package
// yamldoc: unknown keys, wrong types and bad values are all reported at
// once, each with file:line:col and its key path. Its secrets (the broker
// password, the client key) are read afresh at every use and refused when
// others may read or write them. The directory also holds the data files
// operators look for: the example config, the systemd unit, example
// policies and the RabbitMQ configs.
//
// Relative paths in the config (policy_dir, plugin_dir, state_dir and the
// broker's password and TLS files) are resolved against the directory of
// the config file, as nats-server and telegraf users expect, so that the
// daemon behaves the same whatever its working directory.
package configs

import (
	"fmt"
	"io"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
)

// Config is the daemon configuration.
type Config struct {
	File           string   `yaml:"-"`               // path it was loaded from
	Node           string   `yaml:"node"`            // default: os.Hostname()
	PolicyDir      string   `yaml:"policy_dir"`      // default /etc/observerd/policies.d
	PluginDir      string   `yaml:"plugin_dir"`      // default /usr/lib/observerd/plugins
	StateDir       string   `yaml:"state_dir"`       // default /var/lib/observerd
	AllowedTargets []string `yaml:"allowed_targets"` // default ["127.0.0.0/8", "::1/128"]
	// AllowedPIDDirs are the directories that process observers' pid files
	// must resolve inside (symlinks followed); default ["/run"].
	AllowedPIDDirs []string `yaml:"allowed_pid_dirs"`
	// AllowedProcessNames are the names process observers may look a
	// process up by; default none.
	AllowedProcessNames []string      `yaml:"allowed_process_names"`
	Limits              policy.Bounds `yaml:"limits"`
	Log                 Log           `yaml:"log"`
	Admin               Admin         `yaml:"admin"`
	Broker              Broker        `yaml:"broker"`
	Outbox              Outbox        `yaml:"outbox"`
	// Labels name the groups the node belongs to: the control channel's
	// commands for group.<label> reach it (docs/control.md).
	Labels  []string `yaml:"labels"`
	Control Control  `yaml:"control"`

	doc *yamldoc.Document // where each key was written, for validation messages
}

// Log configures the daemon's logs.
type Log struct {
	Level  string `yaml:"level"`  // trace | debug | info (default) | warn | error
	Format string `yaml:"format"` // json (default) | console
}

// Admin configures the admin endpoints: read-only HTTP on loopback TCP,
// and the unix socket that also takes commands.
type Admin struct {
	Listen string `yaml:"listen"` // loopback host:port, default 127.0.0.1:9464; "" disables
	// Socket is the unix socket of the admin API, commands included;
	// default /run/observerd/admin.sock; "" disables.
	Socket string `yaml:"socket"`
	// SocketGroup is the group given the socket (mode 0660), by name or
	// number; "" keeps the daemon's own group.
	SocketGroup string `yaml:"socket_group"`
}

// Broker configures the RabbitMQ connection.
type Broker struct {
	URLs          []string         `yaml:"urls"`           // the cluster's nodes; default ["amqps://observer@localhost:5671/"]
	URLOrder      string           `yaml:"url_order"`      // spread (default) | listed: the order urls are gone round in
	AllowInsecure bool             `yaml:"allow_insecure"` // permits amqp:// (no TLS)
	PasswordFile  string           `yaml:"password_file"`  // else env OBSERVERD_AMQP_PASSWORD
	Auth          string           `yaml:"auth"`           // plain (default) | external (client certificate)
	TLS           TLS              `yaml:"tls"`
	Exchange      string           `yaml:"exchange"`       // default polar.events
	Encoding      string           `yaml:"encoding"`       // protobuf (default) | json
	ConfirmWindow int              `yaml:"confirm_window"` // unconfirmed publishes in flight, 1..65535, default 256
	Heartbeat     yamldoc.Duration `yaml:"heartbeat"`      // whole seconds, 1s..65535s, default 10s
	Queues        []Queue          `yaml:"queues"`         // declared (durable) at every connect
}

// TLS configures the client side of the broker's TLS.
type TLS struct {
	CAFile     string `yaml:"ca_file"`     // PEM roots; "" uses the system pool
	CertFile   string `yaml:"cert_file"`   // client certificate (PEM), with key_file
	KeyFile    string `yaml:"key_file"`    // its private key (PEM)
	ServerName string `yaml:"server_name"` // name to verify; "" means each URL's host
	MinVersion string `yaml:"min_version"` // "1.2" (default) | "1.3"
}

// Queue is a queue declared at connect, with its bindings to the exchange,
// so that events are kept even before the first consumer starts.
type Queue struct {
	Name     string   `yaml:"name"`
	Type     string   `yaml:"type"`     // quorum (default) | classic
	Bindings []string `yaml:"bindings"` // topic patterns, such as observation.#
}

// SetDefaults gives a queue written in the config its default type.
func (q *Queue) SetDefaults() { q.Type = "quorum" }

// Outbox bounds the on-disk outbox.
type Outbox struct {
	MaxBytes yamldoc.ByteSize `yaml:"max_bytes"` // at least 1MiB, default 1GiB
	WhenFull string           `yaml:"when_full"` // drop_oldest (default) | block
}

// Control configures the control channel over the broker connection
// (docs/control.md): off by default, and then nothing is declared.
type Control struct {
	Enabled bool `yaml:"enabled"`
	// Allow maps a broker user (the AMQP user_id RabbitMQ checked) to the
	// commands it may send: observe_now, pause, resume, get_state,
	// apply_policy, remove_policy.
	Allow map[string][]string `yaml:"allow"`
	// MaxCommandsPerSecond bounds each user's commands (bursts of twice
	// as many); default 10.
	MaxCommandsPerSecond float64 `yaml:"max_commands_per_second"`
}

// ControlCommands are the commands control.allow may name, as the
// Command's arguments are named in proto/.
var ControlCommands = []string{"observe_now", "pause", "resume", "get_state", "apply_policy", "remove_policy"}

// PasswordEnv is the environment variable holding the broker password when
// broker.password_file is not set.
const PasswordEnv = "OBSERVERD_AMQP_PASSWORD"

// maxConfigSize caps what Load reads, so that pointing --config at a device
// or a huge file fails fast instead of filling memory.
const maxConfigSize = 1 << 20

// Default returns the configuration used for every key the file leaves out.
func Default() *Config {
	c := &Config{
		PolicyDir:      "/etc/observerd/policies.d",
		PluginDir:      "/usr/lib/observerd/plugins",
		StateDir:       "/var/lib/observerd",
		AllowedTargets: targets.DefaultEntries(),
		AllowedPIDDirs: policy.DefaultPIDDirs(),
		Limits:         policy.DefaultBounds(),
		Log:            Log{Level: "info", Format: "json"},
		Admin:          Admin{Listen: "127.0.0.1:9464", Socket: "/run/observerd/admin.sock"},
		Broker: Broker{
			URLs:          []string{"amqps://observer@localhost:5671/"},
			URLOrder:      "spread",
			Auth:          "plain",
			TLS:           TLS{MinVersion: "1.2"},
			Exchange:      "polar.events",
			Encoding:      "protobuf",
			ConfirmWindow: 256,
			Heartbeat:     yamldoc.Duration(10 * time.Second),
		},
		Outbox:  Outbox{MaxBytes: yamldoc.GiB, WhenFull: "drop_oldest"},
		Control: Control{MaxCommandsPerSecond: 10},
	}
	c.Node, _ = os.Hostname() // when unknown, Validate asks for node
	return c
}

// Load reads the config file at path, decodes it strictly, applies defaults
// and validates it. The error lists every problem, each with file:line:col
// and key path (see yamldoc.ProblemsOf).
func Load(path string) (*Config, error) {
	// Not blocking: --config pointed at a FIFO fails instead of hanging.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	} else if !st.Mode().IsRegular() {
		return nil, &yamldoc.Problem{File: path, Message: "not a regular file; this is not a config file"}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	if len(data) > maxConfigSize {
		return nil, &yamldoc.Problem{File: path, Message: fmt.Sprintf("the file is larger than %s; this is not a config file", yamldoc.ByteSize(maxConfigSize))}
	}
	return Parse(path, data)
}

// Parse is Load from bytes; file names the source in problems and anchors
// relative paths (when empty, they stay relative to the working directory).
//
// When the document decodes but does not validate, Parse returns the config
// together with the problems, so that a checker can go on (--check-config
// checks the policies too); nothing may run with such a config.
func Parse(file string, data []byte) (*Config, error) {
	c := Default()
	doc, err := yamldoc.Decode(file, data, c)
	if doc == nil {
		return nil, err
	}
	c.File, c.doc = file, doc
	if c.Node == "" { // node: "" means the default, as documented
		c.Node, _ = os.Hostname()
	}
	if err := c.resolvePaths(); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// resolvePaths makes relative paths relative to the config file.
func (c *Config) resolvePaths() error {
	if c.File == "" {
		return nil
	}
	base, err := filepath.Abs(filepath.Dir(c.File))
	if err != nil {
		return fmt.Errorf("resolve paths of %s: %w", c.File, err)
	}
	paths := []*string{&c.PolicyDir, &c.PluginDir, &c.StateDir, &c.Admin.Socket,
		&c.Broker.PasswordFile, &c.Broker.TLS.CAFile, &c.Broker.TLS.CertFile, &c.Broker.TLS.KeyFile}
	for i := range c.AllowedPIDDirs {
		paths = append(paths, &c.AllowedPIDDirs[i])
	}
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	return nil
}

// PolicyEnv is what the daemon configured by c validates policies
// against, with checkPlugin, the plugin host's check of a module (nil:
// modules are not checked).
func (c *Config) PolicyEnv(checkPlugin func(path string, memoryLimit uint64) error) policy.Env {
	return policy.Env{
		Allowed: c.Targets(), PIDDirs: c.AllowedPIDDirs, ProcessNames: c.AllowedProcessNames,
		Limits: &c.Limits, PluginDir: c.PluginDir, CheckPlugin: checkPlugin,
	}
}

// Targets is the parsed allowed_targets; entries that do not parse are left
// out (Validate reports them).
func (c *Config) Targets() *targets.AllowList {
	a, _ := targets.Parse(c.AllowedTargets)
	return a
}

var nodeName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,253}$`)

// Validate checks the whole config and returns every problem at once
// (joined *yamldoc.Problem errors, positioned when the config came from a file).
func (c *Config) Validate() error {
	r := c.doc.Report()
	switch {
	case c.Node == "":
		r.Addf("node", "the host name is unknown; set node")
	case !nodeName.MatchString(c.Node):
		r.Addf("node", "invalid node name: use up to 253 letters, digits, '-', '_' and '.'")
	}
	for _, dir := range []struct{ path, value string }{
		{"policy_dir", c.PolicyDir}, {"plugin_dir", c.PluginDir}, {"state_dir", c.StateDir},
	} {
		if dir.value == "" {
			r.Addf(dir.path, "must not be empty")
		}
	}
	_, err := targets.Parse(c.AllowedTargets)
	for _, p := range yamldoc.ProblemsOf(err) {
		r.Addf(p.Path, "%s", p.Message)
	}
	oneOf(r, "log.level", c.Log.Level, "trace", "debug", "info", "warn", "error")
	oneOf(r, "log.format", c.Log.Format, "json", "console")
	for i, dir := range c.AllowedPIDDirs {
		if !filepath.IsAbs(dir) {
			r.Addf(fmt.Sprintf("allowed_pid_dirs[%d]", i), "must be an absolute directory")
		}
	}
	for i, name := range c.AllowedProcessNames {
		if err := policy.CheckProcessName(name); err != nil {
			r.Addf(fmt.Sprintf("allowed_process_names[%d]", i), "%v", err)
		}
	}
	c.Limits.Validate(r, "limits")
	if c.Admin.Listen != "" {
		if err := checkLoopback(c.Admin.Listen); err != nil {
			r.Addf("admin.listen", "%v", err)
		}
	}
	if c.Admin.SocketGroup != "" {
		if _, err := LookupGroup(c.Admin.SocketGroup); err != nil {
			r.Addf("admin.socket_group", "%v", err)
		}
	}
	c.Broker.validate(r)
	if c.Outbox.MaxBytes < yamldoc.MiB {
		r.Addf("outbox.max_bytes", "must be at least 1MiB, got %s", c.Outbox.MaxBytes)
	}
	oneOf(r, "outbox.when_full", c.Outbox.WhenFull, "drop_oldest", "block")
	c.validateControl(r)
	return r.Err()
}

// label is a group label: a word of a routing key (group.<label>).
var label = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)

// brokerUser is a RabbitMQ user name as control.allow may name it.
var brokerUser = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,255}$`)

// maxAllowUsers bounds control.allow: each user has a rate bucket.
const maxAllowUsers = 256

func (c *Config) validateControl(r *yamldoc.Report) {
	seen := map[string]bool{}
	for i, l := range c.Labels {
		path := fmt.Sprintf("labels[%d]", i)
		switch {
		case !label.MatchString(l):
			r.Addf(path, "invalid label: use up to 63 lower-case letters, digits, '-' and '_', beginning and ending with a letter or digit")
		case seen[l]:
			r.Addf(path, "duplicate label %q", l)
		}
		seen[l] = true
	}
	ctl := &c.Control
	if ctl.MaxCommandsPerSecond <= 0 || ctl.MaxCommandsPerSecond > 1000 {
		r.Addf("control.max_commands_per_second", "must be more than 0 and at most 1000")
	}
	if len(ctl.Allow) > maxAllowUsers {
		r.Addf("control.allow", "has %d users; at most %d", len(ctl.Allow), maxAllowUsers)
	}
	for _, user := range slices.Sorted(maps.Keys(ctl.Allow)) {
		path := "control.allow." + user
		if !brokerUser.MatchString(user) {
			r.Addf(path, "invalid broker user name: use letters, digits, '.', '_', '@' and '-'")
		}
		for i, cmd := range ctl.Allow[user] {
			if !slices.Contains(ControlCommands, cmd) {
				r.Addf(fmt.Sprintf("%s[%d]", path, i), "unknown command; use one of: %s", strings.Join(ControlCommands, ", "))
			}
		}
	}
	if ctl.Enabled && len(ctl.Allow) == 0 {
		r.Addf("control.enabled", "the control channel is enabled but control.allow names no user: every command would be refused")
	}
}

// ControlQueue is the durable queue of node's commands on the
// polar.control exchange.
func ControlQueue(node string) string { return "polar.control." + node }

// ControlKeys are the routing keys that reach node: its own, every
// node's, and one per label.
func (c *Config) ControlKeys() []string {
	keys := []string{"node." + c.Node, "all"}
	for _, l := range c.Labels {
		keys = append(keys, "group."+l)
	}
	return keys
}

// oneOf checks an enumerated value.
func oneOf(r *yamldoc.Report, path, value string, allowed ...string) {
	if slices.Contains(allowed, value) {
		return
	}
	r.Addf(path, "unknown value; use one of: %s", strings.Join(allowed, ", "))
}

// Changes returns the key paths (e.g. "log.level", "broker.urls") whose
// values differ between c and next, for telling an operator what a reload
// changed.
func (c *Config) Changes(next *Config) []string {
	return changes("", reflect.ValueOf(*c), reflect.ValueOf(*next))
}

// changes walks the yaml-tagged fields of two structs of one type; nested
// config sections are compared key by key, everything else as a value.
func changes(prefix string, a, b reflect.Value) []string {
	var out []string
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			continue
		}
		fa, fb := a.Field(i), b.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Type.NumField() > 0 && f.Type.Field(0).Tag.Get("yaml") != "" {
			out = append(out, changes(prefix+key+".", fa, fb)...)
		} else if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			out = append(out, prefix+key)
		}
	}
	return out
}

// LookupGroup returns the gid of a group given by name or number.
func LookupGroup(group string) (int, error) {
	if gid, err := strconv.Atoi(group); err == nil && gid >= 0 {
		return gid, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("no group of that name on this host")
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("the group has a gid that is not a number")
	}
	return gid, nil
}
