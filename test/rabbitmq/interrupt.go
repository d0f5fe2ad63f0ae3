package rabbitmq

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// started is what the harness has started and not yet cleaned up: the
// children it has not reaped and the temporary directories it has not
// removed. An interrupted test binary never reaches Close; Main's signal
// handler takes them down from here.
var started = struct {
	sync.Mutex
	children map[*process]bool
	dirs     map[string]bool
}{children: map[*process]bool{}, dirs: map[string]bool{}}

func registerChild(p *process) {
	started.Lock()
	defer started.Unlock()
	started.children[p] = true
}

func unregisterChild(p *process) {
	started.Lock()
	defer started.Unlock()
	delete(started.children, p)
}

func registerTempDir(dir string) {
	started.Lock()
	defer started.Unlock()
	started.dirs[dir] = true
}

// removeTempDir removes a directory that makeDir created.
func removeTempDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove rabbitmq dir: %w", err)
	}
	started.Lock()
	defer started.Unlock()
	delete(started.dirs, dir)
	return nil
}

var handleInterrupts sync.Once

// cleanUpOnInterrupt makes SIGINT and SIGTERM of the test binary kill
// every node and epmd the harness started, remove its temporary
// directories, and then end the binary by that signal as it would have
// ended without the handler. (Pdeathsig alone would kill the VMs, but
// only once the binary has died, and it leaves the directories behind.)
func cleanUpOnInterrupt() {
	handleInterrupts.Do(func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			sig := <-sigs
			abortAll()
			signal.Reset(syscall.SIGINT, syscall.SIGTERM)
			_ = syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		}()
	})
}

// abortAll kills every child the harness started, in parallel, and
// removes its temporary directories.
func abortAll() {
	started.Lock()
	var children []*process
	for p := range started.children {
		children = append(children, p)
	}
	var dirs []string
	for d := range started.dirs {
		dirs = append(dirs, d)
	}
	started.Unlock()
	var wg sync.WaitGroup
	for _, p := range children {
		wg.Go(func() { _ = killTree(p) })
	}
	wg.Wait()
	for _, d := range dirs {
		_ = removeTempDir(d)
	}
}
