package policy

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/polar/observerd/configs/yamldoc"
)

// Parse decodes a policy strictly, applies its defaults, validates it
// against env and computes its Revision. The error lists every problem of
// the file (joined *yamldoc.Problem, see yamldoc.ProblemsOf), each with
// file:line:col and key path such as spec.observers[2].interval.
func Parse(file string, data []byte, env Env) (*Policy, error) {
	if len(data) > MaxFileSize {
		return nil, tooLarge(file, int64(len(data)))
	}
	mustHaveKinds()
	p := &Policy{}
	p.SetDefaults()
	doc, err := yamldoc.Decode(file, data, p)
	if doc == nil {
		return nil, err
	}
	p.File, p.doc = file, doc
	p.complete(env)
	r := doc.Report()
	p.validate(r, env)
	if err := r.Err(); err != nil {
		return nil, err
	}
	p.normalize()
	p.Revision, err = p.revision()
	if err != nil {
		return nil, fmt.Errorf("parse policy %s: %w", file, err)
	}
	return p, nil
}

// ParseFile reads and parses one policy file (see ReadFile).
func ParseFile(file string, env Env) (*Policy, error) {
	data, err := ReadFile(file)
	if err != nil {
		return nil, err
	}
	return Parse(file, data, env)
}

// ReadFile reads one policy file, following the symlinks that stay inside
// its directory (a Kubernetes ConfigMap mounts name.yaml -> ..data/name.yaml
// -> ..2024_01_01_00_00_00.1/name.yaml, all relative and inside the
// mount) and refusing anything but a regular file of at most MaxFileSize.
// A file that resolves outside its directory, through a symlink that
// leaves it or is absolute, is refused: whoever may write policy_dir must
// not be able to make the daemon read, and echo, a file elsewhere (its
// password file, its key). Its error is a *yamldoc.Problem naming the file.
func ReadFile(file string) ([]byte, error) {
	problem := func(format string, args ...any) error {
		return &yamldoc.Problem{File: file, Message: fmt.Sprintf(format, args...)}
	}
	dir, err := os.OpenRoot(filepath.Dir(file))
	if err != nil {
		return nil, problem("cannot read the directory: %v", unwrapPath(err))
	}
	defer dir.Close()
	// O_NONBLOCK: opening a FIFO named like a policy must not hang; for a
	// regular file it changes nothing.
	f, err := dir.OpenFile(filepath.Base(file), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	var errno syscall.Errno
	switch {
	case err != nil && !errors.As(err, &errno):
		// os.Root's refusal to leave the directory is not an errno.
		return nil, problem("the file resolves outside its directory (a symlink out of it, or an absolute one): refused")
	case err != nil:
		return nil, problem("cannot read the file: %v", unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, problem("cannot read the file: %v", unwrapPath(err))
	}
	if !st.Mode().IsRegular() {
		return nil, problem("not a regular file")
	}
	if st.Size() > MaxFileSize {
		return nil, tooLarge(file, st.Size())
	}
	// The limit holds even if the file grows between Stat and ReadAll.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, problem("cannot read the file: %v", unwrapPath(err))
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(file, int64(len(data)))
	}
	return data, nil
}

func tooLarge(file string, size int64) error {
	return &yamldoc.Problem{File: file,
		Message: fmt.Sprintf("the file has %d bytes; a policy may have at most %d (%s)", size, MaxFileSize, yamldoc.ByteSize(MaxFileSize))}
}

// unwrapPath drops the path from an *fs.PathError: problems name the file
// already.
func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// LoadDir parses every *.yaml and *.yml file of dir (not its
// subdirectories), skipping dot-files (such as the ..data entries of a
// Kubernetes ConfigMap mount) and following symlinks. Policy names must be
// unique across files: of two files with the same name, the one sorting
// first by file name is kept, and the other is rejected with a problem that
// names both. The policies together must stay within the daemon's limits
// on observers and plugin memory: one that would go beyond is rejected
// (CheckTotals), as the policy-manager rejects it. It returns the valid
// policies, sorted by file name, and the problems of all the rejected
// files joined.
func LoadDir(dir string, env Env) ([]*Policy, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	var (
		policies []*Policy
		problems []*yamldoc.Problem
		byName   = map[string]*Policy{}
		usage    Usage
	)
	for _, e := range entries {
		name := e.Name()
		if !IsPolicyFile(name) {
			continue
		}
		p, err := ParseFile(filepath.Join(dir, name), env)
		if err != nil {
			problems = append(problems, yamldoc.ProblemsOf(err)...)
			continue
		}
		if first, dup := byName[p.Metadata.Name]; dup {
			problems = append(problems, p.DuplicateOf(first))
			continue
		}
		if prob := p.CheckTotals(usage, env.LimitsOf()); prob != nil {
			problems = append(problems, prob)
			continue
		}
		usage = usage.Add(UsageOf(p))
		byName[p.Metadata.Name] = p
		policies = append(policies, p)
	}
	return policies, yamldoc.Join(problems)
}

// IsPolicyFile reports whether a directory entry named name is a policy
// file: *.yaml or *.yml, not a dot-file (editors' swap files, the ..data
// entries of a Kubernetes ConfigMap mount).
func IsPolicyFile(name string) bool {
	ext := filepath.Ext(name)
	return !strings.HasPrefix(name, ".") && (ext == ".yaml" || ext == ".yml")
}

// DuplicateOf is the problem of p declaring the name of first, a policy of
// another file that keeps it.
func (p *Policy) DuplicateOf(first *Policy) *yamldoc.Problem {
	return p.doc.Problemf("metadata.name", "the policy name is already used by %s:%d",
		first.File, first.doc.Line("metadata.name"))
}

// NameLine is the line of the policy's metadata.name in its file.
func (p *Policy) NameLine() int { return p.doc.Line("metadata.name") }

// complete applies the defaults that depend on other values (those of
// the observers' sections through their Completer), and records each
// observer's line and section.
func (p *Policy) complete(env Env) {
	for i := range p.Spec.Observers {
		o := &p.Spec.Observers[i]
		path := fmt.Sprintf("spec.observers[%d]", i)
		o.Line = p.doc.Line(path)
		if !p.doc.Has(path+".timeout") && o.Interval > 0 {
			o.Timeout = min(yamldoc.Duration(time.Second), o.Interval/2)
		}
		o.Section = o.sections[o.Kind]
		if c, ok := o.Section.(Completer); ok {
			c.Complete(p.sectionContext(o, path, env, nil, false))
		}
	}
}

// sectionContext is what the section of observer o, at path, sees of the
// policy; r (nil while completing) takes its problems.
func (p *Policy) sectionContext(o *Observer, path string, env Env, r *yamldoc.Report, targetValid bool) *SectionContext {
	return &SectionContext{Env: env, Observer: o, Target: p.Spec.Target, TargetHostPort: hostPortOf(p.Spec.Target.URL),
		TargetValid: targetValid, path: path + "." + o.Kind, doc: p.doc, report: r}
}

// hostPortOf is the host:port of a URL, with the port of its scheme when
// it has none; "" when it has no host.
func hostPortOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// normalize gives values that mean the same one spelling, after validation
// (whose messages name the keys as written), so that the revision does not
// depend on the spelling.
func (p *Policy) normalize() {
	for _, o := range p.Spec.Observers {
		if n, ok := o.Section.(Normalizer); ok {
			n.Normalize()
		}
	}
}

// checkPort accepts a decimal port 1..65535.
func checkPort(port string) error {
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return errors.New("invalid port: use 1 to 65535")
	}
	return nil
}
