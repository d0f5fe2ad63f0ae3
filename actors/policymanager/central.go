package policymanager

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The central policies' cache (docs/control.md): a directory under
// state_dir that the control actor writes and the policy-manager watches
// as it watches policy_dir. A central policy NAME is the file NAME.yaml,
// holding the document exactly as it was sent (so that its problems have
// the sender's line numbers), and .NAME.yaml.issuer, the broker user who
// sent it; a dot-file is not a policy file. The cache outlives the
// broker: a daemon restarting while the broker is away runs it.

// CentralFile is the cache file of the central policy name in dir.
func CentralFile(dir, name string) string { return filepath.Join(dir, name+".yaml") }

// issuerFile is the file naming who sent the central policy at path.
func issuerFile(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".issuer")
}

// maxIssuer bounds what is read of an issuer file: a broker user name.
const maxIssuer = 256

// readIssuer is who sent the central policy at path; "" when that is not
// known (the file is missing or unreadable).
func readIssuer(path string) string {
	f, err := os.Open(issuerFile(path))
	if err != nil {
		return ""
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxIssuer))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// WriteCentral writes the central policy name, sent by issuer, into dir
// atomically: the issuer first, then the document through a temporary
// file renamed over the old one, each synced, and the directory synced,
// so that a crash leaves the old version or the new one whole. The
// watcher sees the rename.
func WriteCentral(dir, name string, document []byte, issuer string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write central policy %s: %w", name, err)
	}
	path := CentralFile(dir, name)
	if err := writeAtomically(issuerFile(path), []byte(issuer+"\n")); err != nil {
		return fmt.Errorf("write central policy %s: %w", name, err)
	}
	if err := writeAtomically(path, document); err != nil {
		return fmt.Errorf("write central policy %s: %w", name, err)
	}
	return syncDir(dir)
}

// RemoveCentral removes the central policy name from dir; fs.ErrNotExist
// when there is none.
func RemoveCentral(dir, name string) error {
	path := CentralFile(dir, name)
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fs.ErrNotExist
		}
		return fmt.Errorf("remove central policy %s: %w", name, err)
	}
	if err := os.Remove(issuerFile(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove central policy %s: %w", name, err)
	}
	return syncDir(dir)
}

func writeAtomically(path string, data []byte) error {
	// A dot-file: never taken for a policy while it is written.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
