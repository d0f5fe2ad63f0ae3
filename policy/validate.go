package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"syscall"

	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
)

// Bounds of values that are valid in form but would harm the daemon.
const (
	maxRedirects   = 20
	maxSampleLimit = 1_000_000
	minWASMMemory  = yamldoc.MiB
	maxWASMMemory  = 4 * yamldoc.GiB
	wasmPageSize   = 64 * yamldoc.KiB
)

// names become parts of event sources and AMQP routing, hence DNS-label-like.
var name = regexp.MustCompile(`^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$`)

// ValidName reports whether s is a valid policy or observer name, for
// callers that take names from elsewhere than a policy file (commands).
func ValidName(s string) bool { return name.MatchString(s) }

func checkName(r *yamldoc.Report, path, value string) {
	switch {
	case value == "":
		r.Addf(path, "is required")
	case !name.MatchString(value):
		r.Addf(path, "invalid name: use up to 63 lower-case letters, digits, '-' and '_', "+
			"beginning and ending with a letter or digit (it becomes part of event sources)")
	}
}

func (p *Policy) validate(r *yamldoc.Report, env Env) {
	for _, h := range []struct{ path, got, want string }{
		{"apiVersion", p.APIVersion, APIVersion},
		{"kind", p.Kind, Kind},
	} {
		switch h.got {
		case h.want:
		case "":
			r.Addf(h.path, "is required; use %q", h.want)
		default:
			r.Addf(h.path, "must be %q", h.want)
		}
	}
	checkName(r, "metadata.name", p.Metadata.Name)

	allowed := env.allowed()
	t := p.Spec.Target
	if t.Name == "" {
		r.Addf("spec.target.name", "is required")
	}
	targetOK := false
	if t.URL == "" {
		r.Addf("spec.target.url", "is required")
	} else if err := checkTargetURL(t.URL, allowed); err != nil {
		r.Addf("spec.target.url", "%v", err)
	} else {
		targetOK = true
	}

	// The policy's limits protect the observed service; the daemon's
	// limits cap them, so that no policy makes the daemon a load generator.
	daemon := env.LimitsOf()
	l := p.Spec.Limits
	switch {
	case !(l.MaxRequestsPerSecond > 0) || math.IsInf(l.MaxRequestsPerSecond, 0):
		r.Addf("spec.limits.max_requests_per_second", "must be a number greater than 0, got %v", l.MaxRequestsPerSecond)
	case l.MaxRequestsPerSecond > daemon.MaxRequestsPerSecond:
		r.Addf("spec.limits.max_requests_per_second", "must be at most %g (limits.max_requests_per_second of the daemon config), got %g",
			daemon.MaxRequestsPerSecond, l.MaxRequestsPerSecond)
	}
	switch {
	case l.MaxConcurrentRequests < 1:
		r.Addf("spec.limits.max_concurrent_requests", "must be at least 1, got %d", l.MaxConcurrentRequests)
	case l.MaxConcurrentRequests > daemon.MaxConcurrentRequests:
		r.Addf("spec.limits.max_concurrent_requests", "must be at most %d (limits.max_concurrent_requests of the daemon config), got %d",
			daemon.MaxConcurrentRequests, l.MaxConcurrentRequests)
	}

	if len(p.Spec.Observers) == 0 {
		r.Addf("spec.observers", "at least one observer is required")
	}
	first := map[string]int{}
	for i := range p.Spec.Observers {
		o := &p.Spec.Observers[i]
		path := fmt.Sprintf("spec.observers[%d]", i)
		checkName(r, path+".name", o.Name)
		if j, dup := first[o.Name]; dup && o.Name != "" {
			r.Addf(path+".name", "duplicate observer name; first at %s", p.doc.Where(fmt.Sprintf("spec.observers[%d].name", j)))
		} else {
			first[o.Name] = i
		}
		p.validateObserver(r, env, allowed, o, path, targetOK)
	}
}

// maxThreshold bounds thresholds.down_after and up_after: beyond it an
// observer would take hours to change state at common intervals.
const maxThreshold = 100

func (p *Policy) validateObserver(r *yamldoc.Report, env Env, allowed *targets.AllowList, o *Observer, path string, targetOK bool) {
	limits := env.LimitsOf()
	switch {
	case !p.doc.Has(path + ".interval"):
		r.Addf(path+".interval", "is required")
	case o.Interval < limits.MinInterval:
		r.Addf(path+".interval", "must be at least %s (limits.min_interval of the daemon config), got %s", limits.MinInterval, o.Interval)
	}
	switch {
	case o.Timeout <= 0:
		if p.doc.Has(path + ".timeout") {
			r.Addf(path+".timeout", "must be greater than 0, got %s", o.Timeout)
		}
	case o.Interval > 0 && o.Timeout >= o.Interval:
		r.Addf(path+".timeout", "must be shorter than the interval (%s), got %s", o.Interval, o.Timeout)
	}
	for _, t := range []struct {
		key string
		n   int
	}{{"down_after", o.Thresholds.DownAfter}, {"up_after", o.Thresholds.UpAfter}} {
		if t.n < 1 || t.n > maxThreshold {
			r.Addf(path+".thresholds."+t.key, "must be between 1 and %d, got %d", maxThreshold, t.n)
		}
	}

	sections := []struct {
		kind    string
		present bool
		check   func(path string)
	}{
		{KindHTTP, o.HTTP != nil, func(path string) { o.HTTP.validate(r, path, limits.MaxResponseBytes) }},
		{KindPrometheus, o.Prometheus != nil, func(path string) { o.Prometheus.validate(r, path) }},
		{KindTCP, o.TCP != nil, func(path string) {
			// A defaulted address comes from the target, whose own
			// problem already says what is wrong with it.
			if p.doc.Has(path+".address") || targetOK {
				if err := checkHostPort(o.TCP.Address, allowed); err != nil {
					r.Addf(path+".address", "%v", err)
				}
			}
		}},
		{KindProcess, o.Process != nil, func(path string) { o.Process.validate(r, path, env) }},
		{KindWASM, o.WASM != nil, func(path string) { o.WASM.validate(r, path, env, o.Timeout, limits.MaxPluginMemory) }},
	}
	if o.Kind == "" {
		r.Addf(path+".kind", "is required; use one of: %s", strings.Join(Kinds, ", "))
		return
	}
	if !slices.Contains(Kinds, o.Kind) {
		r.Addf(path+".kind", "unknown kind; use one of: %s", strings.Join(Kinds, ", "))
		return
	}
	for _, s := range sections {
		switch {
		case s.kind == o.Kind && !s.present:
			r.Addf(path+"."+s.kind, "an observer of kind %s needs the section %s: ({} for its defaults)", o.Kind, s.kind)
		case s.kind == o.Kind:
			s.check(path + "." + s.kind)
		case s.present:
			r.Addf(path+"."+s.kind, "a %s section does not belong to an observer of kind %s", s.kind, o.Kind)
		}
	}
}

// checkTargetURL accepts an absolute http(s) URL of an allowed host, with
// no credentials, query or fragment (those belong to observers' sections).
func checkTargetURL(raw string, allowed *targets.AllowList) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("invalid URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must be an absolute http:// or https:// URL")
	case u.Hostname() == "":
		return errors.New("the URL has no host")
	case u.User != nil:
		return errors.New("credentials do not belong in the URL: send them with http.headers")
	case u.RawQuery != "" || u.Fragment != "":
		return errors.New("a query or fragment does not belong in the target URL: put it in the observers' paths")
	}
	if port := u.Port(); port != "" {
		if err := checkPort(port); err != nil {
			return err
		}
	}
	return checkAllowed(u.Hostname(), allowed)
}

func checkAllowed(host string, allowed *targets.AllowList) error {
	if !allowed.AllowsHost(host) {
		return fmt.Errorf("the host is not in allowed_targets %s", allowed)
	}
	return nil
}

// checkHostPort accepts host:port of an allowed host.
func checkHostPort(address string, allowed *targets.AllowList) error {
	host, port, err := net.SplitHostPort(address)
	if err != nil || host == "" {
		return errors.New("invalid address: want host:port, like 127.0.0.1:8080")
	}
	if err := checkPort(port); err != nil {
		return err
	}
	return checkAllowed(host, allowed)
}

// token is an HTTP token (RFC 9110), the syntax of methods and header names.
var token = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func (h *HTTP) validate(r *yamldoc.Report, path string, maxBody yamldoc.ByteSize) {
	if !token.MatchString(h.Method) {
		r.Addf(path+".method", "invalid HTTP method: use a token such as GET or HEAD")
	}
	if err := checkRequestPath(h.Path); err != nil {
		r.Addf(path+".path", "%v", err)
	}
	canonical := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(h.Headers)) { // sorted: stable messages
		value := h.Headers[name]
		hp := yamldoc.PathKey(path+".headers", name)
		if !token.MatchString(name) {
			r.Addf(hp, "invalid header name")
		}
		if strings.ContainsFunc(value, func(c rune) bool { return c < ' ' && c != '\t' || c == 0x7f }) {
			r.Addf(hp, "the value of header %s holds control characters", name)
		}
		key := http.CanonicalHeaderKey(name)
		if other, dup := canonical[key]; dup {
			r.Addf(hp, "the header is given twice (also as %s)", yamldoc.PathKey(path+".headers", other))
		}
		canonical[key] = name
	}
	if len(h.ExpectStatus) == 0 {
		r.Addf(path+".expect_status", "at least one status is required")
	}
	for i, status := range h.ExpectStatus {
		if status < 100 || status > 599 {
			r.Addf(fmt.Sprintf("%s.expect_status[%d]", path, i), "HTTP status must be between 100 and 599, got %d", status)
		}
	}
	if h.MaxBodyBytes < 1 || h.MaxBodyBytes > maxBody {
		r.Addf(path+".max_body_bytes", "must be between 1B and %s (limits.max_response_bytes of the daemon config), got %s", maxBody, h.MaxBodyBytes)
	}
	if h.BodyMatch != "" {
		if _, err := regexp.Compile(h.BodyMatch); err != nil {
			r.Addf(path+".body_match", "invalid regular expression: %v", unwrapRegexp(err))
		}
	}
	for i, pointer := range h.Extract {
		if err := checkJSONPointer(pointer); err != nil {
			r.Addf(fmt.Sprintf("%s.extract[%d]", path, i), "%v", err)
		}
	}
	switch {
	case h.MaxRedirects < 0 || h.MaxRedirects > maxRedirects:
		r.Addf(path+".max_redirects", "must be between 0 and %d, got %d", maxRedirects, h.MaxRedirects)
	case h.FollowRedirects && h.MaxRedirects == 0:
		r.Addf(path+".max_redirects", "must be at least 1 when follow_redirects is true")
	}
}

// checkRequestPath accepts an absolute path, with an optional query. A
// path beginning with // would read as another host when resolved against
// the target, so it is refused.
func checkRequestPath(p string) error {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
		return errors.New("must begin with a single /")
	}
	u, err := url.ParseRequestURI(p)
	if err != nil || u.Fragment != "" || strings.Contains(p, "#") {
		return errors.New("invalid request path")
	}
	return nil
}

// checkJSONPointer checks RFC 6901 syntax: empty (the whole document) or
// /-separated tokens where ~ is only ever ~0 or ~1.
func checkJSONPointer(p string) error {
	if p != "" && !strings.HasPrefix(p, "/") {
		return errors.New("invalid JSON pointer: it must be empty or begin with /")
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '~' && (i+1 == len(p) || (p[i+1] != '0' && p[i+1] != '1')) {
			return errors.New("invalid JSON pointer: ~ must be followed by 0 or 1 (~0 is ~, ~1 is /)")
		}
	}
	return nil
}

// unwrapRegexp keeps the regexp error's reason, without the expression
// its Error repeats.
func unwrapRegexp(err error) error {
	var se *syntax.Error
	if errors.As(err, &se) {
		return errors.New(se.Code.String())
	}
	return errors.New("invalid")
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

func (m *Prometheus) validate(r *yamldoc.Report, path string) {
	if err := checkRequestPath(m.Path); err != nil {
		r.Addf(path+".path", "%v", err)
	}
	for _, list := range []struct {
		key      string
		patterns []string
	}{{"include", m.Include}, {"exclude", m.Exclude}} {
		for i, pattern := range list.patterns {
			if _, err := compileMetricPattern(pattern); err != nil {
				r.Addf(fmt.Sprintf("%s.%s[%d]", path, list.key, i), "invalid regular expression: %v", unwrapRegexp(err))
			}
		}
	}
	for label := range m.MatchLabels {
		if !labelName.MatchString(label) {
			r.Addf(yamldoc.PathKey(path+".match_labels", label), "invalid Prometheus label name")
		}
	}
	if m.SampleLimit < 1 || m.SampleLimit > maxSampleLimit {
		r.Addf(path+".sample_limit", "must be between 1 and %d, got %d", maxSampleLimit, m.SampleLimit)
	}
}

// compileMetricPattern anchors a pattern at both ends, as Prometheus does
// in relabelling, so that "up" does not select "backup_duration".
func compileMetricPattern(pattern string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(pattern); err != nil {
		return nil, err // reported against the pattern as written
	}
	return regexp.Compile("^(?:" + pattern + ")$")
}

// MetricFilter returns the predicate selecting metric names: kept when
// Include is empty or one of its patterns matches, and none of Exclude does.
func (m *Prometheus) MetricFilter() (func(name string) bool, error) {
	compile := func(patterns []string) ([]*regexp.Regexp, error) {
		out := make([]*regexp.Regexp, len(patterns))
		for i, pattern := range patterns {
			re, err := compileMetricPattern(pattern)
			if err != nil {
				return nil, fmt.Errorf("compile metric pattern %q: %w", pattern, err)
			}
			out[i] = re
		}
		return out, nil
	}
	include, err := compile(m.Include)
	if err != nil {
		return nil, err
	}
	exclude, err := compile(m.Exclude)
	if err != nil {
		return nil, err
	}
	matches := func(res []*regexp.Regexp, name string) bool {
		return slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(name) })
	}
	return func(name string) bool {
		return (len(include) == 0 || matches(include, name)) && !matches(exclude, name)
	}, nil
}

// A process observer reads a file and the process table of the host: the
// daemon config says which directories and which names a policy may use,
// so that a policy can neither read the daemon's own secrets through a
// "pid file" nor probe every user's processes.
func (pr *Process) validate(r *yamldoc.Report, path string, env Env) {
	_, _, inside := PIDDirOf(pr.PIDFile, env.pidDirs())
	switch {
	case pr.PIDFile != "" && pr.Name != "":
		r.Addf(path, "set pid_file or name, not both")
	case pr.PIDFile == "" && pr.Name == "":
		r.Addf(path, "set one of pid_file or name")
	case pr.PIDFile != "" && !filepath.IsAbs(pr.PIDFile):
		r.Addf(path+".pid_file", "must be an absolute path")
	case pr.PIDFile != "" && !inside:
		r.Addf(path+".pid_file", "is not inside allowed_pid_dirs %v of the daemon config", env.pidDirs())
	case pr.Name != "":
		if err := CheckProcessName(pr.Name); err != nil {
			r.Addf(path+".name", "%v", err)
		} else if !slices.Contains(env.ProcessNames, pr.Name) {
			r.Addf(path+".name", "is not in allowed_process_names %v of the daemon config", env.ProcessNames)
		}
	}
}

// PIDDirOf returns the entry of dirs that holds the pid file at file,
// cleaned, and file relative to it; ok is false when none does. It is the
// one rule of allowed_pid_dirs, for validation and for the process
// observer. The test is lexical: the observer opens the file inside that
// entry, through an os.Root, so that a symlink cannot lead out of it. An
// entry holds the files below it, not itself: a path equal to an allowed
// dir names no pid file. When entries nest, the outermost is taken, so
// that a link from the inner one into the outer one stays inside.
func PIDDirOf(file string, dirs []string) (dir, rel string, ok bool) {
	file = filepath.Clean(file)
	for _, d := range dirs {
		d = filepath.Clean(d)
		r, err := filepath.Rel(d, file)
		if err != nil || r == "." || !filepath.IsLocal(r) {
			continue
		}
		if !ok || len(d) < len(dir) {
			dir, rel, ok = d, r, true
		}
	}
	return dir, rel, ok
}

var hexSHA256 = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

func (w *WASM) validate(r *yamldoc.Report, path string, env Env, observerTimeout yamldoc.Duration, maxMemory yamldoc.ByteSize) {
	moduleOK := false
	switch m := w.Module; {
	case m == "":
		r.Addf(path+".module", "is required")
	case strings.ContainsAny(m, `/\`+"\x00") || strings.HasPrefix(m, "."):
		r.Addf(path+".module", "must be a plain file name in plugin_dir (no path, no leading dot)")
	default:
		moduleOK = true
	}
	shaOK := w.SHA256 == "" || hexSHA256.MatchString(w.SHA256)
	if !shaOK {
		r.Addf(path+".sha256", "must be 64 hexadecimal digits")
	}
	if moduleOK && env.PluginDir != "" {
		sum, err := fileSHA256(filepath.Join(env.PluginDir, w.Module))
		switch {
		case errors.Is(err, os.ErrNotExist):
			r.Addf(path+".module", "plugin %s not found in plugin_dir %s", w.Module, env.PluginDir)
		case err != nil:
			r.Addf(path+".module", "cannot read plugin %s: %v", w.Module, err)
		case w.SHA256 != "" && shaOK && !strings.EqualFold(sum, w.SHA256):
			r.Addf(path+".sha256", "plugin %s has sha256 %s, not the one pinned here", w.Module, sum)
		case env.CheckPlugin != nil:
			limit := uint64(w.MemoryLimit)
			if w.MemoryLimit < minWASMMemory || w.MemoryLimit > maxWASMMemory {
				limit = 0 // reported below; checked with the default meanwhile
			}
			if err := env.CheckPlugin(filepath.Join(env.PluginDir, w.Module), limit); err != nil {
				r.Addf(path+".module", "%v", err)
			}
		}
	}
	switch {
	case w.MemoryLimit < minWASMMemory || w.MemoryLimit > maxWASMMemory:
		r.Addf(path+".memory_limit", "must be between %s and %s, got %s", minWASMMemory, maxWASMMemory, w.MemoryLimit)
	case w.MemoryLimit%wasmPageSize != 0:
		r.Addf(path+".memory_limit", "must be a multiple of the 64KiB WebAssembly page, got %s", w.MemoryLimit)
	case w.MemoryLimit > maxMemory:
		r.Addf(path+".memory_limit", "must be at most %s (limits.max_plugin_memory of the daemon config, for all plugin observers together), got %s", maxMemory, w.MemoryLimit)
	}
	switch {
	case w.Timeout <= 0:
		r.Addf(path+".timeout", "must be greater than 0, got %s", w.Timeout)
	case observerTimeout > 0 && w.Timeout > observerTimeout:
		r.Addf(path+".timeout", "must not exceed the observer's timeout (%s), got %s", observerTimeout, w.Timeout)
	}
}

// MaxModuleBytes caps a plugin module file: validation hashes no more,
// and the plugin host (package wasm) reads no more.
const MaxModuleBytes = 64 << 20

// fileSHA256 hashes a regular file of at most MaxModuleBytes. It opens
// without blocking, so that a FIFO named like a module is refused instead
// of holding the parser, and refuses a larger file before reading it (a
// sparse file of any size costs nothing to make and minutes to hash, at
// every parse).
func fileSHA256(file string) (string, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", unwrapPath(err)
	}
	defer f.Close()
	tooLarge := fmt.Errorf("larger than %s", yamldoc.ByteSize(MaxModuleBytes))
	if st, err := f.Stat(); err != nil {
		return "", unwrapPath(err)
	} else if !st.Mode().IsRegular() {
		return "", errors.New("not a regular file")
	} else if st.Size() > MaxModuleBytes {
		return "", tooLarge
	}
	h := sha256.New()
	// Bounded again: the file may grow while it is read.
	if n, err := io.Copy(h, io.LimitReader(f, MaxModuleBytes+1)); err != nil {
		return "", unwrapPath(err)
	} else if n > MaxModuleBytes {
		return "", tooLarge
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
