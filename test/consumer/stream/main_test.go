package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStartAt(t *testing.T) {
	dir := t.TempDir()
	stored := filepath.Join(dir, "stored")
	require.NoError(t, os.WriteFile(stored, []byte("41\n"), 0o644))
	garbled := filepath.Join(dir, "garbled")
	require.NoError(t, os.WriteFile(garbled, []byte("forty-one"), 0o644))
	noon := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		from, file string
		want       any
		err        string
	}{
		{from: "first", want: "first"},
		{from: "last", want: "last"},
		{from: "next", want: "next"},
		{from: "2026-11-23T12:00:00Z", want: noon},
		{from: "0", want: int64(0)},
		{from: "1234", want: int64(1234)},
		{from: "first", file: stored, want: int64(42)},
		{from: "first", file: filepath.Join(dir, "none"), want: "first"},
		{from: "first", file: garbled, err: `read the offset stored in ` + garbled + `: strconv.ParseInt: parsing "forty-one": invalid syntax`},
		{from: "", err: `-from "": want first, last, next, an RFC 3339 time or an offset`},
		{from: "yesterday", err: `-from "yesterday": want first, last, next, an RFC 3339 time or an offset`},
		{from: "-1", err: `-from "-1": want first, last, next, an RFC 3339 time or an offset`},
		{from: "2026-13-01T00:00:00Z", err: `-from "2026-13-01T00:00:00Z": want first, last, next, an RFC 3339 time or an offset`},
	}
	for _, tt := range tests {
		t.Run(tt.from+" "+filepath.Base(tt.file), func(t *testing.T) {
			got, err := startAt(tt.from, tt.file)
			if tt.err != "" {
				assert.EqualError(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			if want, ok := tt.want.(time.Time); ok {
				assert.True(t, want.Equal(got.(time.Time)), "got %v", got)
				return
			}
			assert.Equal(t, tt.want, got)
		})
	}
}
