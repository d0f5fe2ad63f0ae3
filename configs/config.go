// Package configs loads and validates the daemon configuration
// (observerd.yaml, see docs/operations.md), and holds the strict YAML decoding that
// package policy shares: unknown keys, wrong types and bad values are all
// reported at once, each with file:line:col and its key path.
//
// Relative paths in the config (policy_dir, plugin_dir, state_dir and the
// broker's password and TLS files) are resolved against the directory of
// the config file, as nats-server and telegraf users expect, so that the
// daemon behaves the same whatever its working directory.
package configs

import (
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
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
	AllowedProcessNames []string `yaml:"allowed_process_names"`
	Limits              Limits   `yaml:"limits"`
	Log                 Log      `yaml:"log"`
	Admin               Admin    `yaml:"admin"`
	Broker              Broker   `yaml:"broker"`
	Outbox              Outbox   `yaml:"outbox"`

	doc *Document // where each key was written, for validation messages
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

// Limits bound what policies may make the daemon do. They are the daemon
// owner's, not the policy writers': a policy that asks for more is
// rejected, and the event budget is enforced while it runs.
type Limits struct {
	// MinInterval is the shortest observer interval; default 1s.
	MinInterval Duration `yaml:"min_interval"`
	// MaxRequestsPerSecond and MaxConcurrentRequests are the highest
	// spec.limits a policy may set; default 100 and 16.
	MaxRequestsPerSecond  float64 `yaml:"max_requests_per_second"`
	MaxConcurrentRequests int     `yaml:"max_concurrent_requests"`
	// MaxEventsPerSecond is each policy's budget of observation events;
	// the excess is dropped and reported in policy.throttled; default 100.
	MaxEventsPerSecond float64 `yaml:"max_events_per_second"`
	// MaxEventsPerSecondTotal is the budget of all policies' observation
	// events together, so that many policies cannot do what one may not;
	// default 1000.
	MaxEventsPerSecondTotal float64 `yaml:"max_events_per_second_total"`
	// MaxObservers is the number of observers of all policies together;
	// default 1000.
	MaxObservers int `yaml:"max_observers"`
	// MaxPluginMemory is the sum of the wasm observers' memory_limit over
	// all policies; default 512MiB, which with the Go heap's 512MiB
	// (GOMEMLIMIT) fills the unit's MemoryHigh.
	MaxPluginMemory ByteSize `yaml:"max_plugin_memory"`
	// MaxResponseBytes caps what one observation reads of an answer (an
	// http body, a metrics page, a plugin's http response); default 16MiB.
	MaxResponseBytes ByteSize `yaml:"max_response_bytes"`
	// MaxResponseBytesTotal caps the answers all observers may hold at
	// once: each observation reserves its own cap before it asks, and
	// waits (within its timeout) while the total is taken; default 64MiB.
	MaxResponseBytesTotal ByteSize `yaml:"max_response_bytes_total"`
}

// DefaultLimits are the limits of a config that sets none.
func DefaultLimits() Limits {
	return Limits{
		MinInterval:             Duration(time.Second),
		MaxRequestsPerSecond:    100,
		MaxConcurrentRequests:   16,
		MaxEventsPerSecond:      100,
		MaxEventsPerSecondTotal: 1000,
		MaxObservers:            1000,
		MaxPluginMemory:         512 * MiB,
		MaxResponseBytes:        16 * MiB,
		MaxResponseBytesTotal:   64 * MiB,
	}
}

// DefaultPIDDirs is allowed_pid_dirs when the config sets none.
func DefaultPIDDirs() []string { return []string{"/run"} }

// Broker configures the RabbitMQ connection.
type Broker struct {
	URLs          []string `yaml:"urls"`           // tried in order; default ["amqps://observer@localhost:5671/"]
	AllowInsecure bool     `yaml:"allow_insecure"` // permits amqp:// (no TLS)
	PasswordFile  string   `yaml:"password_file"`  // else env OBSERVERD_AMQP_PASSWORD
	Auth          string   `yaml:"auth"`           // plain (default) | external (client certificate)
	TLS           TLS      `yaml:"tls"`
	Exchange      string   `yaml:"exchange"`       // default polar.events
	Encoding      string   `yaml:"encoding"`       // protobuf (default) | json
	ConfirmWindow int      `yaml:"confirm_window"` // unconfirmed publishes in flight, 1..65535, default 256
	Heartbeat     Duration `yaml:"heartbeat"`      // whole seconds, 1s..65535s, default 10s
	Queues        []Queue  `yaml:"queues"`         // declared (durable) at every connect
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
	MaxBytes ByteSize `yaml:"max_bytes"` // at least 1MiB, default 1GiB
	WhenFull string   `yaml:"when_full"` // drop_oldest (default) | block
}

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
		AllowedTargets: []string{"127.0.0.0/8", "::1/128"},
		AllowedPIDDirs: DefaultPIDDirs(),
		Limits:         DefaultLimits(),
		Log:            Log{Level: "info", Format: "json"},
		Admin:          Admin{Listen: "127.0.0.1:9464", Socket: "/run/observerd/admin.sock"},
		Broker: Broker{
			URLs:          []string{"amqps://observer@localhost:5671/"},
			Auth:          "plain",
			TLS:           TLS{MinVersion: "1.2"},
			Exchange:      "polar.events",
			Encoding:      "protobuf",
			ConfirmWindow: 256,
			Heartbeat:     Duration(10 * time.Second),
		},
		Outbox: Outbox{MaxBytes: GiB, WhenFull: "drop_oldest"},
	}
	c.Node, _ = os.Hostname() // when unknown, Validate asks for node
	return c
}

// Load reads the config file at path, decodes it strictly, applies defaults
// and validates it. The error lists every problem, each with file:line:col
// and key path (see ProblemsOf).
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
		return nil, &Problem{File: path, Message: "not a regular file; this is not a config file"}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	if len(data) > maxConfigSize {
		return nil, &Problem{File: path, Message: fmt.Sprintf("the file is larger than %s; this is not a config file", ByteSize(maxConfigSize))}
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
	doc, err := DecodeStrict(file, data, c)
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

// Targets is the parsed allowed_targets; entries that do not parse are left
// out (Validate reports them).
func (c *Config) Targets() *AllowList {
	a, _ := ParseAllowList(c.AllowedTargets)
	return a
}

var nodeName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,253}$`)

// Validate checks the whole config and returns every problem at once
// (joined *Problem errors, positioned when the config came from a file).
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
	_, err := ParseAllowList(c.AllowedTargets)
	for _, p := range ProblemsOf(err) {
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
		if err := CheckProcessName(name); err != nil {
			r.Addf(fmt.Sprintf("allowed_process_names[%d]", i), "%v", err)
		}
	}
	c.Limits.validate(r)
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
	if c.Outbox.MaxBytes < MiB {
		r.Addf("outbox.max_bytes", "must be at least 1MiB, got %s", c.Outbox.MaxBytes)
	}
	oneOf(r, "outbox.when_full", c.Outbox.WhenFull, "drop_oldest", "block")
	return r.Err()
}

// oneOf checks an enumerated value.
func oneOf(r *Report, path, value string, allowed ...string) {
	for _, a := range allowed {
		if value == a {
			return
		}
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

// CheckProcessName accepts what a process observer may look a process up
// by: a command name, as in /proc/<pid>/comm or the base name of argv[0].
func CheckProcessName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("a process name must not be empty")
	case len(name) > 255:
		return fmt.Errorf("a process name has at most 255 bytes, got %d", len(name))
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("a process name holds no / and no NUL (use pid_file to point at a file)")
	}
	return nil
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

// Bounds of the limits section: past them a limit protects nothing.
const (
	minMinInterval = time.Millisecond
	maxRate        = 1e6
	maxConcurrency = 10_000
	maxObservers   = 1_000_000
)

func (l *Limits) validate(r *Report) {
	if time.Duration(l.MinInterval) < minMinInterval {
		r.Addf("limits.min_interval", "must be at least %s, got %s", minMinInterval, l.MinInterval)
	}
	for _, rate := range []struct {
		path string
		v    float64
	}{
		{"limits.max_requests_per_second", l.MaxRequestsPerSecond},
		{"limits.max_events_per_second", l.MaxEventsPerSecond},
		{"limits.max_events_per_second_total", l.MaxEventsPerSecondTotal},
	} {
		if !(rate.v > 0) || rate.v > maxRate {
			r.Addf(rate.path, "must be greater than 0 and at most %g, got %g", float64(maxRate), rate.v)
		}
	}
	if l.MaxConcurrentRequests < 1 || l.MaxConcurrentRequests > maxConcurrency {
		r.Addf("limits.max_concurrent_requests", "must be between 1 and %d, got %d", maxConcurrency, l.MaxConcurrentRequests)
	}
	if l.MaxObservers < 1 || l.MaxObservers > maxObservers {
		r.Addf("limits.max_observers", "must be between 1 and %d, got %d", maxObservers, l.MaxObservers)
	}
	if l.MaxPluginMemory < 0 {
		r.Addf("limits.max_plugin_memory", "must not be negative, got %s", l.MaxPluginMemory)
	}
	if l.MaxResponseBytes < KiB || l.MaxResponseBytes > GiB {
		r.Addf("limits.max_response_bytes", "must be between 1KiB and 1GiB, got %s", l.MaxResponseBytes)
	} else if l.MaxResponseBytesTotal < l.MaxResponseBytes || l.MaxResponseBytesTotal > 16*GiB {
		r.Addf("limits.max_response_bytes_total", "must be between limits.max_response_bytes (%s) and 16GiB, got %s", l.MaxResponseBytes, l.MaxResponseBytesTotal)
	}
}
