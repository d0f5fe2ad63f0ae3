package control

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

// window is the persisted record of the commands answered recently, by
// id: a redelivered command (the daemon crashed, or lost its connection,
// after it acted but before the delivery was acked) is answered again
// with the first answer, and nothing is done twice. It is a bbolt file in
// state_dir, bounded in count and age: a command is redelivered within
// seconds of a reconnect, or after a restart; a day covers both by far.
//
// The record is written after the command acted and before its answer is
// emitted: a crash between acting and recording acts again at the
// redelivery (at most once per crash), which no window can avoid without
// recording before acting, and a record before acting would answer a
// command that never ran as done.
type window struct {
	db     *bolt.DB
	max    int
	maxAge time.Duration
	n      int // the ids it holds
}

// Window bounds.
const (
	windowMax    = 10000
	windowMaxAge = 24 * time.Hour
)

var (
	bucketByID   = []byte("by-id")   // id -> received (8 bytes, unix ns) + CommandResult
	bucketByTime = []byte("by-time") // received (8 bytes) + id -> nothing: the order of pruning
)

func openWindow(path string, maxCount int, maxAge time.Duration) (*window, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open the window of command ids %s: %w", path, err)
	}
	w := &window{db: db, max: maxCount, maxAge: maxAge}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketByID, bucketByTime} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		w.n = tx.Bucket(bucketByID).Stats().KeyN
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open the window of command ids %s: %w", path, err)
	}
	return w, nil
}

func (w *window) close() error { return w.db.Close() }

// get is the answer recorded for id; nil when there is none (or it is
// unreadable: the command is then handled as new).
func (w *window) get(id string) *messages.CommandResult {
	var res *messages.CommandResult
	_ = w.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketByID).Get([]byte(id))
		if len(v) < 8 {
			return nil
		}
		r := &messages.CommandResult{}
		if proto.Unmarshal(v[8:], r) == nil {
			res = r
		}
		return nil
	})
	return res
}

// put records the answer res to id, received at now, and drops what is
// beyond the bounds: older than maxAge, and the oldest beyond max.
func (w *window) put(id string, res *messages.CommandResult, now time.Time) error {
	data, err := proto.Marshal(res)
	if err != nil {
		return fmt.Errorf("record command %s: %w", id, err)
	}
	at := binary.BigEndian.AppendUint64(nil, uint64(now.UnixNano()))
	n := w.n
	err = w.db.Update(func(tx *bolt.Tx) error {
		byID, byTime := tx.Bucket(bucketByID), tx.Bucket(bucketByTime)
		if old := byID.Get([]byte(id)); len(old) >= 8 {
			if err := byTime.Delete(append(old[:8:8], id...)); err != nil {
				return err
			}
		} else {
			n++
		}
		if err := byID.Put([]byte(id), append(at[:8:8], data...)); err != nil {
			return err
		}
		if err := byTime.Put(append(at[:8:8], id...), nil); err != nil {
			return err
		}
		var err error
		n, err = w.prune(byID, byTime, n, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("record command %s: %w", id, err)
	}
	w.n = n
	return nil
}

// prune drops the records older than maxAge and the oldest beyond max
// from the n held, and returns how many are left.
func (w *window) prune(byID, byTime *bolt.Bucket, n int, now time.Time) (int, error) {
	cutoff := uint64(now.Add(-w.maxAge).UnixNano())
	c := byTime.Cursor()
	for k, _ := c.First(); len(k) >= 8; k, _ = c.First() {
		if n <= w.max && binary.BigEndian.Uint64(k[:8]) >= cutoff {
			break
		}
		if err := byID.Delete(k[8:]); err != nil {
			return n, err
		}
		if err := c.Delete(); err != nil {
			return n, err
		}
		n--
	}
	return n, nil
}
