package process

import (
	"path/filepath"
	"slices"

	"github.com/polar/observerd/policy"
)

// Section is a process observer's section: the process is found by
// exactly one of its pid file or its name.
type Section struct {
	PIDFile string `yaml:"pid_file" schema:"pattern=^(/.*)?$" doc:"Absolute path of the process's pid file, in the daemon's allowed_pid_dirs; or set name."`
	Name    string `yaml:"name" doc:"The process's name, one of the daemon's allowed_process_names; or set pid_file."`
}

// Validate checks the section against the daemon config. A process
// observer reads a file and the process table of the host: the daemon
// config says which directories and which names a policy may use, so that
// a policy can neither read the daemon's own secrets through a "pid file"
// nor probe every user's processes.
func (pr *Section) Validate(c *policy.SectionContext) {
	dirs := c.Env.PIDDirsOf()
	_, _, inside := PIDDirOf(pr.PIDFile, dirs)
	switch {
	case pr.PIDFile != "" && pr.Name != "":
		c.Addf("", "set pid_file or name, not both")
	case pr.PIDFile == "" && pr.Name == "":
		c.Addf("", "set one of pid_file or name")
	case pr.PIDFile != "" && !filepath.IsAbs(pr.PIDFile):
		c.Addf("pid_file", "must be an absolute path")
	case pr.PIDFile != "" && !inside:
		c.Addf("pid_file", "is not inside allowed_pid_dirs %v of the daemon config", dirs)
	case pr.Name != "":
		if err := policy.CheckProcessName(pr.Name); err != nil {
			c.Addf("name", "%v", err)
		} else if !slices.Contains(c.Env.ProcessNames, pr.Name) {
			c.Addf("name", "is not in allowed_process_names %v of the daemon config", c.Env.ProcessNames)
		}
	}
}

// PIDDirOf returns the entry of dirs that holds the pid file at file,
// cleaned, and file relative to it; ok is false when none does. It is the
// one rule of allowed_pid_dirs, for validation and for the check. The
// test is lexical: the check opens the file inside that entry, through an
// os.Root, so that a symlink cannot lead out of it. An entry holds the
// files below it, not itself: a path equal to an allowed dir names no pid
// file. When entries nest, the outermost is taken, so that a link from
// the inner one into the outer one stays inside.
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
