package wasm

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
)

// Section is a wasm observer's section: the plugin module to run, and
// what it is given.
type Section struct {
	Module      string           `yaml:"module" schema:"required" doc:"File name of the plugin module in the daemon's plugin_dir."`
	SHA256      string           `yaml:"sha256" doc:"SHA-256 of the module in hex: when set, only that module runs."`
	Config      map[string]any   `yaml:"config" doc:"The plugin's settings, given to it as JSON."`
	MemoryLimit yamldoc.ByteSize `yaml:"memory_limit" doc:"The plugin's memory, 1MiB to 4GiB in 64KiB pages; all plugins together at most the daemon's limits.max_plugin_memory."`
	// Timeout is the deadline of one plugin call; default 1s, capped at the
	// observer's timeout, which bounds the whole observation anyway.
	Timeout yamldoc.Duration `yaml:"timeout" doc:"Deadline of one plugin call, at most the observer's timeout; default 1s."`
}

// SetDefaults sets a 32MiB memory limit.
func (w *Section) SetDefaults() { w.MemoryLimit = 32 * yamldoc.MiB }

// Complete defaults the call's timeout to 1s, within the observer's.
func (w *Section) Complete(c *policy.SectionContext) {
	if c.Has("timeout") {
		return
	}
	w.Timeout = yamldoc.Duration(time.Second)
	if c.Observer.Timeout > 0 {
		w.Timeout = min(w.Timeout, c.Observer.Timeout)
	}
}

// PluginMemory is the memory the plugin reserves of the daemon's
// limits.max_plugin_memory.
func (w *Section) PluginMemory() yamldoc.ByteSize { return w.MemoryLimit }

// Bounds of the plugin's memory: what wasm32 addresses, in its pages.
const (
	minMemory = yamldoc.MiB
	maxMemory = 4 * yamldoc.GiB
	pageSize  = 64 * yamldoc.KiB
)

var hexSHA256 = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// ExtendSchema gives the schema the module's and the pinned sum's syntax,
// and the least memory.
func (*Section) ExtendSchema(s *yamldoc.Schema) {
	s.Properties["module"].Pattern = `^[^./\\][^/\\]*$`         // a plain file name, no leading dot
	s.Properties["sha256"].Pattern = "^$|" + hexSHA256.String() // "" pins nothing
	least := float64(minMemory)                                 // of a size written in bytes: a schema cannot compare 32MiB
	s.Properties["memory_limit"].Minimum = &least
}

// Validate checks the section, and the module when the daemon's
// plugin_dir is known: present, the pinned one, and (Env.CheckPlugin) a
// plugin of the ABI within the memory limit.
func (w *Section) Validate(c *policy.SectionContext) {
	env, maxTotal := c.Env, c.Env.LimitsOf().MaxPluginMemory
	moduleOK := false
	switch m := w.Module; {
	case m == "":
		c.Addf("module", "is required")
	case strings.ContainsAny(m, `/\`+"\x00") || strings.HasPrefix(m, "."):
		c.Addf("module", "must be a plain file name in plugin_dir (no path, no leading dot)")
	default:
		moduleOK = true
	}
	shaOK := w.SHA256 == "" || hexSHA256.MatchString(w.SHA256)
	if !shaOK {
		c.Addf("sha256", "must be 64 hexadecimal digits")
	}
	if moduleOK && env.PluginDir != "" {
		sum, err := fileSHA256(filepath.Join(env.PluginDir, w.Module))
		switch {
		case errors.Is(err, os.ErrNotExist):
			c.Addf("module", "plugin %s not found in plugin_dir %s", w.Module, env.PluginDir)
		case err != nil:
			c.Addf("module", "cannot read plugin %s: %v", w.Module, err)
		case w.SHA256 != "" && shaOK && !strings.EqualFold(sum, w.SHA256):
			c.Addf("sha256", "plugin %s has sha256 %s, not the one pinned here", w.Module, sum)
		case env.CheckPlugin != nil:
			limit := uint64(w.MemoryLimit)
			if w.MemoryLimit < minMemory || w.MemoryLimit > maxMemory {
				limit = 0 // reported below; checked with the default meanwhile
			}
			if err := env.CheckPlugin(filepath.Join(env.PluginDir, w.Module), limit); err != nil {
				c.Addf("module", "%v", err)
			}
		}
	}
	switch {
	case w.MemoryLimit < minMemory || w.MemoryLimit > maxMemory:
		c.Addf("memory_limit", "must be between %s and %s, got %s", minMemory, maxMemory, w.MemoryLimit)
	case w.MemoryLimit%pageSize != 0:
		c.Addf("memory_limit", "must be a multiple of the 64KiB WebAssembly page, got %s", w.MemoryLimit)
	case w.MemoryLimit > maxTotal:
		c.Addf("memory_limit", "must be at most %s (limits.max_plugin_memory of the daemon config, for all plugin observers together), got %s", maxTotal, w.MemoryLimit)
	}
	switch observerTimeout := c.Observer.Timeout; {
	case w.Timeout <= 0:
		c.Addf("timeout", "must be greater than 0, got %s", w.Timeout)
	case observerTimeout > 0 && w.Timeout > observerTimeout:
		c.Addf("timeout", "must not exceed the observer's timeout (%s), got %s", observerTimeout, w.Timeout)
	}
}

// Normalize spells the sum in lower case and an empty config as none.
func (w *Section) Normalize() {
	w.SHA256 = strings.ToLower(w.SHA256)
	if len(w.Config) == 0 {
		w.Config = nil
	}
}

// fileSHA256 hashes a regular file of at most policy.MaxModuleBytes. It
// opens without blocking, so that a FIFO named like a module is refused
// instead of holding the parser, and refuses a larger file before
// reading it (a sparse file of any size costs nothing to make and
// minutes to hash, at every parse).
func fileSHA256(file string) (string, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", kinds.Pathless(err)
	}
	defer f.Close()
	tooLarge := fmt.Errorf("larger than %s", yamldoc.ByteSize(policy.MaxModuleBytes))
	if st, err := f.Stat(); err != nil {
		return "", kinds.Pathless(err)
	} else if !st.Mode().IsRegular() {
		return "", errors.New("not a regular file")
	} else if st.Size() > policy.MaxModuleBytes {
		return "", tooLarge
	}
	h := sha256.New()
	// Bounded again: the file may grow while it is read.
	if n, err := io.Copy(h, io.LimitReader(f, policy.MaxModuleBytes+1)); err != nil {
		return "", kinds.Pathless(err)
	} else if n > policy.MaxModuleBytes {
		return "", tooLarge
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
