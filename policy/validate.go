package policy

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"

	"github.com/polar/observerd/configs/targets"
	"github.com/polar/observerd/configs/yamldoc"
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

	allowed := env.AllowedOf()
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
		p.validateObserver(r, env, o, path, targetOK)
	}
}

// maxThreshold bounds thresholds.down_after and up_after: beyond it an
// observer would take hours to change state at common intervals.
const maxThreshold = 100

func (p *Policy) validateObserver(r *yamldoc.Report, env Env, o *Observer, path string, targetOK bool) {
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

	kinds := Kinds()
	if o.Kind == "" {
		r.Addf(path+".kind", "is required; use one of: %s", strings.Join(kinds, ", "))
		return
	}
	if !slices.Contains(kinds, o.Kind) {
		r.Addf(path+".kind", "unknown kind; use one of: %s", strings.Join(kinds, ", "))
		return
	}
	for _, kind := range kinds {
		_, present := o.sections[kind]
		switch {
		case kind == o.Kind && !present:
			r.Addf(path+"."+kind, "an observer of kind %s needs the section %s: ({} for its defaults)", o.Kind, kind)
		case kind == o.Kind:
			o.Section.Validate(p.sectionContext(o, path, env, r, targetOK))
		case present:
			r.Addf(path+"."+kind, "a %s section does not belong to an observer of kind %s", kind, o.Kind)
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

// CheckHostPort accepts host:port of an allowed host.
func CheckHostPort(address string, allowed *targets.AllowList) error {
	host, port, err := net.SplitHostPort(address)
	if err != nil || host == "" {
		return errors.New("invalid address: want host:port, like 127.0.0.1:8080")
	}
	if err := checkPort(port); err != nil {
		return err
	}
	return checkAllowed(host, allowed)
}

// RequestPathPattern is, for schemas, what CheckRequestPath accepts
// short of parsing: one leading /, no fragment.
const RequestPathPattern = `^/([^/#][^#]*)?$`

// CheckRequestPath accepts the path of a request to the target: an
// absolute path, with an optional query. A path beginning with // would
// read as another host when resolved against the target, so it is
// refused.
func CheckRequestPath(p string) error {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
		return errors.New("must begin with a single /")
	}
	u, err := url.ParseRequestURI(p)
	if err != nil || u.Fragment != "" || strings.Contains(p, "#") {
		return errors.New("invalid request path")
	}
	return nil
}

// RegexpReason is the reason of a regexp.Compile error, without the
// expression its Error repeats: problems never quote the document.
func RegexpReason(err error) error {
	if se, ok := errors.AsType[*syntax.Error](err); ok {
		return errors.New(se.Code.String())
	}
	return errors.New("invalid")
}

// MaxModuleBytes caps a plugin module file: validation hashes no more,
// and the plugin host (package wasm) reads no more.
const MaxModuleBytes = 64 << 20
