package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/polar/observerd/configs"
)

// maxEnviron bounds the environment block scrubEnviron reads: the kernel
// limits it to a quarter of the stack limit, a few MiB.
const maxEnviron = 8 << 20

// takePasswordEnv takes OBSERVERD_AMQP_PASSWORD out of the environment
// (configs.TakePasswordEnv) and, only when it was set, scrubs it from the
// block /proc/<pid>/environ shows (scrubEnviron, with proc the process's
// /proc directory). scrubErr says the password stays readable there.
func takePasswordEnv(proc string) (password string, scrubErr error) {
	_, set := os.LookupEnv(configs.PasswordEnv)
	password = configs.TakePasswordEnv()
	if set {
		scrubErr = scrubEnviron(proc, configs.PasswordEnv)
	}
	return password, scrubErr
}

// scrubEnviron overwrites the entries of name in the environment block the
// kernel gave the process, which is what /proc/<pid>/environ shows to the
// process's user (and root): os.Unsetenv does not touch it, since Go
// copies the environment at start. The block's address is in proc/stat;
// the process writes its own memory through proc/mem.
func scrubEnviron(proc, name string) error {
	stat, err := os.ReadFile(filepath.Join(proc, "stat"))
	if err != nil {
		return fmt.Errorf("scrub environment: %w", err)
	}
	envStart, envEnd, err := envBlock(stat)
	if err != nil {
		return fmt.Errorf("scrub environment: %s/stat: %w", proc, err)
	}
	mem, err := os.OpenFile(filepath.Join(proc, "mem"), os.O_RDWR, 0)
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

// envBlock returns env_start and env_end, fields 50 and 51 of the content
// of /proc/<pid>/stat. Fields are counted after the command name (field
// 2), which is in parentheses and may hold spaces and parentheses itself:
// after the last ')'. Errors quote nothing of stat.
func envBlock(stat []byte) (start, end int64, err error) {
	paren := bytes.LastIndexByte(stat, ')')
	if paren < 0 {
		return 0, 0, errors.New("no command name")
	}
	fields := bytes.Fields(stat[paren+1:]) // fields[0] is field 3
	if len(fields) < 51-2 {
		return 0, 0, fmt.Errorf("%d fields, env_end is field 51", len(fields)+2)
	}
	if start, err = statField(fields, 50, "env_start"); err != nil {
		return 0, 0, err
	}
	if end, err = statField(fields, 51, "env_end"); err != nil {
		return 0, 0, err
	}
	if end < start || end-start > maxEnviron {
		return 0, 0, fmt.Errorf("env_end - env_start is %d bytes, not within 0..%d", end-start, maxEnviron)
	}
	return start, end, nil
}

// statField parses field n (counted from 1) of /proc/<pid>/stat, fields
// being those after the command name.
func statField(fields [][]byte, n int, name string) (int64, error) {
	v, err := strconv.ParseInt(string(fields[n-3]), 10, 64)
	if err != nil {
		// Without the text, which strconv's error quotes.
		if num, ok := errors.AsType[*strconv.NumError](err); ok {
			err = num.Err
		}
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	if v < 0 {
		return 0, fmt.Errorf("%s is negative", name)
	}
	return v, nil
}
