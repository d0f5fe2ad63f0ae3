// Package boltdamage really damages a bbolt file, for the tests of what
// observerd does with a damaged outbox: it overwrites pages of the file in
// place, as a failing disk or a stray write would, on a closed file or on
// one a process has open (bbolt maps the file shared, so the process sees
// the damage at its next read).
//
// The layout it relies on is bbolt's (go.etcd.io/bbolt/internal/common):
// pages 0 and 1 are the meta pages, each a 16-byte page header then the
// meta: magic, version, page size, flags (4 bytes each), the root bucket
// (root page id, sequence), the freelist page id, the high-water page id,
// the transaction id and a checksum (8 bytes each). Data pages have no
// checksum: Value damages one stored value, which bbolt cannot notice.
package boltdamage

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	pageHeader  = 16
	offVersion  = pageHeader + 4
	offPageSize = pageHeader + 8
	offFreelist = pageHeader + 32
	offPgid     = pageHeader + 40
	offChecksum = pageHeader + 56
	magic       = 0xED0CDAED
)

// garbage is what damaged pages are filled with. As a page header its
// flags are no page type bbolt knows.
var garbage = []byte("garbage!")

type meta struct {
	pageSize int64
	freelist int64
	pgid     int64 // high-water mark: pages 0..pgid-1 are in use
}

// metas reads the file's two meta pages.
func metas(t testing.TB, f *os.File) []meta {
	t.Helper()
	var out []meta
	buf := make([]byte, pageHeader+64)
	_, err := f.ReadAt(buf, 0)
	require.NoError(t, err)
	require.Equal(t, uint32(magic), binary.LittleEndian.Uint32(buf[pageHeader:]), "not a bbolt file")
	size := int64(binary.LittleEndian.Uint32(buf[offPageSize:]))
	for page := range int64(2) {
		_, err := f.ReadAt(buf, page*size)
		require.NoError(t, err)
		out = append(out, meta{
			pageSize: size,
			freelist: int64(binary.LittleEndian.Uint64(buf[offFreelist:])),
			pgid:     int64(binary.LittleEndian.Uint64(buf[offPgid:])),
		})
	}
	return out
}

func open(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func fill(t testing.TB, f *os.File, page, size int64) {
	t.Helper()
	_, err := f.WriteAt(bytes.Repeat(garbage, int(size)/len(garbage)), page*size)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
}

// Freelist overwrites the freelist pages that both meta pages name: bbolt
// panics reading them when it opens the file.
func Freelist(t testing.TB, path string) {
	t.Helper()
	f := open(t, path)
	for _, m := range metas(t, f) {
		fill(t, f, m.freelist, m.pageSize)
	}
}

// Pages overwrites every page in use but the meta pages: the metas stay
// valid, so bbolt opens the file (or goes on using it), and panics at the
// first page it reads.
func Pages(t testing.TB, path string) {
	t.Helper()
	f := open(t, path)
	ms := metas(t, f)
	for page := int64(2); page < max(ms[0].pgid, ms[1].pgid); page++ {
		fill(t, f, page, ms[0].pageSize)
	}
}

// Truncate cuts the file after its meta pages: the pages they name are
// beyond the end of the file, and reading them faults (SIGBUS).
func Truncate(t testing.TB, path string) {
	t.Helper()
	f := open(t, path)
	require.NoError(t, f.Truncate(2*metas(t, f)[0].pageSize))
}

// Checksums flips a byte of both meta pages' checksums: bbolt refuses to
// open the file (ErrChecksum).
func Checksums(t testing.TB, path string) {
	t.Helper()
	flipMeta(t, path, offChecksum)
}

// Version changes both meta pages' version: bbolt refuses to open the file
// (ErrVersionMismatch).
func Version(t testing.TB, path string) {
	t.Helper()
	flipMeta(t, path, offVersion)
}

func flipMeta(t testing.TB, path string, off int64) {
	t.Helper()
	f := open(t, path)
	for page, m := range metas(t, f) {
		b := make([]byte, 1)
		at := int64(page)*m.pageSize + off
		_, err := f.ReadAt(b, at)
		require.NoError(t, err)
		b[0] ^= 0xff
		_, err = f.WriteAt(b, at)
		require.NoError(t, err)
	}
	require.NoError(t, f.Sync())
}

// Value overwrites, at offset at of a stored value, len(with) bytes with
// with: in the value's leaf page, and in any freed page that still holds
// a copy of it (harmless, and no copy escapes). bbolt has no checksum on
// its data pages, so it opens the file and returns the damaged value as
// it is. value must occur in the file (a value holding a random id is
// unique).
func Value(t testing.TB, path string, value []byte, at int, with []byte) {
	t.Helper()
	require.LessOrEqual(t, at+len(with), len(value), "the damage lies within the value")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	f := open(t, path)
	found := 0
	for off := 0; ; {
		i := bytes.Index(data[off:], value)
		if i < 0 {
			break
		}
		_, err := f.WriteAt(with, int64(off+i+at))
		require.NoError(t, err)
		found++
		off += i + len(value)
	}
	require.Positive(t, found, "the value is in the file")
	require.NoError(t, f.Sync())
}
