package broker

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The sequence file (outbox.seq, beside outbox.db) keeps what the outbox
// must never forget outside the file that may be damaged: a bbolt file that
// cannot be opened cannot say which sequences it used, and continuing from
// 1 would reuse them.
//
// It reserves sequences in blocks: before a commit uses a sequence above
// the ceiling, a new ceiling (reserveBlock further) is written and fsynced,
// so every sequence ever committed is at or below the ceiling on disk. It
// also records the floor: the lowest sequence still unconfirmed when it was
// written. Events only leave the outbox once confirmed (or dropped, which
// is reported), and new ones get higher sequences, so every event that a
// damaged file can take with it is in floor..ceiling: that is the range
// an outbox.overflow with policy "corrupt" names, and the new file goes on
// after the ceiling.
//
// One line of text, so that an operator can read it:
//
//	observerd-outbox-seq v1 floor=<n> last=<n> ceiling=<n> crc=<crc32 of what precedes>
const seqFileName = "outbox.seq"

// reserveBlock is how many sequences one write of the sequence file
// reserves. The write costs two fsyncs (the file, then its directory) on
// top of the commit's; once per 16,384 events it is lost in the noise
// (docs/delivery.md has the measured cost), and the range a corrupt report
// names is at most that much larger than what was really used.
const reserveBlock = 1 << 14

// maxSeqFileSize bounds the read of the sequence file: its line is under
// 100 bytes, anything longer is not one.
const maxSeqFileSize = 256

type seqFile struct {
	// floor is the lowest sequence not confirmed when the file was
	// written (last+1 when none was waiting).
	floor uint64
	// last is the last committed sequence when the file was written: a
	// healthy outbox whose last sequence is lower went back in time
	// (restored from a copy, or truncated).
	last uint64
	// ceiling is the highest sequence that may have been committed.
	ceiling uint64
}

const seqFormat = "observerd-outbox-seq v1 floor=%d last=%d ceiling=%d"

func (s seqFile) line() string {
	body := fmt.Sprintf(seqFormat, s.floor, s.last, s.ceiling)
	return fmt.Sprintf("%s crc=%08x\n", body, crc32.ChecksumIEEE([]byte(body)))
}

// errSeqFileInvalid says the sequence file is there but not one: it is then
// as good as missing (it is rewritten), never trusted.
var errSeqFileInvalid = errors.New("invalid sequence file")

// readSeqFile reads dir's sequence file: (nil, nil) when there is none;
// errSeqFileInvalid when it is damaged; any other error (permission, I/O)
// means the state_dir is unusable.
func readSeqFile(dir string) (*seqFile, error) {
	path := filepath.Join(dir, seqFileName)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSeqFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var s seqFile
	var crc uint32
	n, _ := fmt.Sscanf(string(data), seqFormat+" crc=%08x\n", &s.floor, &s.last, &s.ceiling, &crc)
	if n != 4 || len(data) > maxSeqFileSize || s.line() != string(data) || s.ceiling < s.last {
		return nil, fmt.Errorf("read %s: %w", path, errSeqFileInvalid)
	}
	return &s, nil
}

// writeSeqFile replaces dir's sequence file atomically and durably: a temp
// file, fsynced, renamed over the old one, and the directory fsynced, so
// that after a crash the file is either the old one or the new one, and
// the new one survives once this returns.
func writeSeqFile(dir string, s seqFile) error {
	path := filepath.Join(dir, seqFileName)
	tmp := path + ".tmp"
	err := func() error {
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := f.WriteString(s.line()); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}()
	if err != nil {
		// A temp file left by a failed write would hold space on a full disk.
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// clockCeiling is the sequence a damaged outbox goes on after when no
// sequence file says how far it got (damaged before its first start with a
// version that writes one): no outbox has averaged a million events per
// second since 1970, so nothing at or above it was used. It stays below
// 2^53 (exact in JSON numbers) until the year 2255.
func clockCeiling(now time.Time) uint64 {
	return uint64(max(now.Unix(), 1)) * 1_000_000
}
