package rabbitmq

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// ErrNotInstalled is returned by Start when no RabbitMQ server (or no Erlang
// runtime) is found on this machine.
var ErrNotInstalled = errors.New("rabbitmq-server not found: run `make test`, which installs it")

// debianHomes is where Debian's rabbitmq-server package unpacks the server;
// a variable so that a test can pretend it is not installed.
var debianHomes = "/usr/lib/rabbitmq/lib/rabbitmq_server-*"

// install locates the pieces of a RabbitMQ installation the harness runs.
type install struct {
	home    string // RABBITMQ_HOME: holds sbin/, plugins/ and escript/
	plugins string // home/plugins
	ctl     string // home/sbin/rabbitmqctl, not Debian's /usr/sbin wrapper
	erl     string
	epmd    string
}

// findInstall looks for Debian's layout first (/usr/lib/rabbitmq/lib/
// rabbitmq_server-<version>) and then for a rabbitmqctl on PATH that
// resolves into a generic-unix layout. Debian's /usr/sbin scripts are
// deliberately not used: as root they `su rabbitmq`, cd to /var/lib/rabbitmq
// and send output to /var/log/rabbitmq, none of which a private node wants.
func findInstall() (install, error) {
	var homes []string
	debian, _ := filepath.Glob(debianHomes)
	// The highest version sorts last; prefer it if several are unpacked.
	slices.Sort(debian)
	slices.Reverse(debian)
	homes = append(homes, debian...)
	if ctl, err := exec.LookPath("rabbitmqctl"); err == nil {
		if real, err := filepath.EvalSymlinks(ctl); err == nil {
			homes = append(homes, filepath.Dir(filepath.Dir(real)))
		}
	}

	var in install
	for _, home := range homes {
		if isFile(filepath.Join(home, "sbin", "rabbitmq-server")) &&
			isFile(filepath.Join(home, "sbin", "rabbitmqctl")) &&
			isDir(filepath.Join(home, "plugins")) {
			in.home = home
			break
		}
	}
	if in.home == "" {
		return in, ErrNotInstalled
	}
	in.plugins = filepath.Join(in.home, "plugins")
	in.ctl = filepath.Join(in.home, "sbin", "rabbitmqctl")

	var err error
	if in.erl, err = lookPath("erl", "/usr/lib/erlang/bin/erl"); err != nil {
		return in, fmt.Errorf("find erl: %w", ErrNotInstalled)
	}
	if in.epmd, err = lookPath("epmd", "/usr/lib/erlang/bin/epmd"); err != nil {
		return in, fmt.Errorf("find epmd: %w", ErrNotInstalled)
	}
	return in, nil
}

// lookPath finds name on PATH or at fallback: a non-root PATH often lacks
// the directory Erlang is installed in.
func lookPath(name, fallback string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if isFile(fallback) {
		return fallback, nil
	}
	return "", fmt.Errorf("%s not on PATH nor at %s", name, fallback)
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// pluginRoots are the applications the node boots; everything else in the
// plugins directory is only there when their dependencies need it.
var pluginRoots = []string{"rabbit", "rabbitmq_prelaunch", "rabbitmq_auth_mechanism_ssl"}

var appDepsRE = regexp.MustCompile(`\{\s*(?:included_)?applications\s*,\s*\[([^\]]*)\]`)

// linkPlugins fills dst with symlinks to the applications of src that the
// node needs (pluginRoots and their dependencies, read from the .app files).
//
// This is purely for speed: Erlang/OTP 25 has no code path cache, so with
// every one of the ~70 bundled plugins on ERL_LIBS each module load probes
// dozens of directories, and RabbitMQ also reads every plugin's metadata at
// boot. Trimming the directory takes about two seconds off a node start.
func linkPlugins(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("read plugins dir: %w", err)
	}
	dirs := map[string]string{} // application name -> directory name
	for _, e := range entries {
		name := e.Name()
		i := strings.LastIndex(name, "-")
		if i <= 0 || i == len(name)-1 || name[i+1] < '0' || name[i+1] > '9' {
			continue
		}
		dirs[name[:i]] = name
	}

	needed := map[string]bool{}
	queue := append([]string(nil), pluginRoots...)
	for len(queue) > 0 {
		app := queue[0]
		queue = queue[1:]
		dir, ok := dirs[app]
		if !ok || needed[app] {
			// Not a plugin: kernel, ssl and friends come with Erlang itself.
			continue
		}
		needed[app] = true
		spec, err := os.ReadFile(filepath.Join(src, dir, "ebin", app+".app"))
		if err != nil {
			return fmt.Errorf("read application spec of %s: %w", app, err)
		}
		for _, m := range appDepsRE.FindAllSubmatch(spec, -1) {
			for dep := range strings.SplitSeq(string(m[1]), ",") {
				if dep = strings.TrimSpace(dep); dep != "" {
					queue = append(queue, dep)
				}
			}
		}
	}
	for _, root := range pluginRoots {
		if !needed[root] {
			return fmt.Errorf("plugin %s not found in %s", root, src)
		}
	}

	if err := os.RemoveAll(dst); err != nil {
		return fmt.Errorf("remove old plugins dir: %w", err)
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return fmt.Errorf("create plugins dir: %w", err)
	}
	for app := range needed {
		if err := os.Symlink(filepath.Join(src, dirs[app]), filepath.Join(dst, dirs[app])); err != nil {
			return fmt.Errorf("link plugin %s: %w", app, err)
		}
	}
	return nil
}
