package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// maxEnviron bounds the environment block scrubEnviron reads: the kernel
// limits it to a quarter of the stack limit, a few MiB.
const maxEnviron = 8 << 20

// scrubEnviron overwrites the entries of name in the environment block the
// kernel gave the process, which is what /proc/<pid>/environ shows to the
// process's user (and root): os.Unsetenv does not touch it, since Go
// copies the environment at start. The block's address is in
// /proc/self/stat; the process writes its own memory through
// /proc/self/mem.
func scrubEnviron(name string) error {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return fmt.Errorf("scrub environment: %w", err)
	}
	// Fields are counted after the command name, which is in parentheses
	// and may hold spaces: env_start and env_end are fields 50 and 51.
	end := bytes.LastIndexByte(stat, ')')
	fields := bytes.Fields(stat[end+1:])
	if end < 0 || len(fields) < 49 {
		return errors.New("scrub environment: /proc/self/stat has no env_start")
	}
	envStart, err1 := strconv.ParseInt(string(fields[50-3]), 10, 64)
	envEnd, err2 := strconv.ParseInt(string(fields[51-3]), 10, 64)
	if err := errors.Join(err1, err2); err != nil || envEnd < envStart || envEnd-envStart > maxEnviron {
		return fmt.Errorf("scrub environment: unexpected env_start/env_end in /proc/self/stat: %v", err)
	}
	mem, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("scrub environment: %w", err)
	}
	defer mem.Close()
	block := make([]byte, envEnd-envStart)
	if _, err := mem.ReadAt(block, envStart); err != nil {
		return fmt.Errorf("scrub environment: %w", err)
	}
	prefix := []byte(name + "=")
	for off := 0; off < len(block); {
		n := bytes.IndexByte(block[off:], 0)
		if n < 0 {
			n = len(block) - off
		}
		if bytes.HasPrefix(block[off:off+n], prefix) {
			if _, err := mem.WriteAt(make([]byte, n), envStart+int64(off)); err != nil {
				return fmt.Errorf("scrub environment: %w", err)
			}
		}
		off += n + 1
	}
	return nil
}
