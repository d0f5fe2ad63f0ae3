package jsonpointer

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func decode(t testing.TB, s string) any {
	t.Helper()
	var doc any
	require.NoError(t, json.Unmarshal([]byte(s), &doc))
	return doc
}

// TestFind: the examples of RFC 6901 section 5, and what it leaves out.
func TestFind(t *testing.T) {
	doc := decode(t, `{"foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4, "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8, "~1": 9}`)
	for _, tc := range []struct {
		pointer string
		want    any
		found   bool
	}{
		{"", doc, true},
		{"/foo", []any{"bar", "baz"}, true},
		{"/foo/0", "bar", true},
		{"/", 0.0, true},
		{"/a~1b", 1.0, true},
		{"/c%d", 2.0, true},
		{"/e^f", 3.0, true},
		{"/g|h", 4.0, true},
		{"/i\\j", 5.0, true},
		{"/k\"l", 6.0, true},
		{"/ ", 7.0, true},
		{"/m~0n", 8.0, true},
		{"/~01", 9.0, true},
		{"/foo/01", nil, false},
		{"/foo/+1", nil, false},
		{"/foo/-1", nil, false},
		{"/foo/-", nil, false},
		{"/foo/2", nil, false},
		{"/foo/0/x", nil, false},
		{"/missing", nil, false},
		{"foo", nil, false},
	} {
		t.Run(tc.pointer, func(t *testing.T) {
			got, found := Find(doc, tc.pointer)
			assert.Equal(t, tc.found, found)
			assert.Equal(t, tc.want, got)
		})
	}
}

// FuzzFind: any pointer against any document ends, without a panic, and
// a value found is one that encodes again.
func FuzzFind(f *testing.F) {
	f.Add(`{"a":[1,{"b~/":2}]}`, "/a/1/b~0~1")
	f.Add(`[0,1]`, "/01")
	f.Add(`7`, "")
	f.Fuzz(func(t *testing.T, doc, pointer string) {
		var d any
		if json.Unmarshal([]byte(doc), &d) != nil {
			return
		}
		if v, ok := Find(d, pointer); ok {
			_, err := json.Marshal(v)
			assert.NoError(t, err)
		}
	})
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		pointer string
		err     string
	}{
		{"", ""},
		{"/", ""},
		{"/a~0b/~1/0", ""},
		{"xyz", "must be empty or begin with /"},
		{"/xyz~", "~ must be followed by 0 or 1"},
		{"/xyz~2", "~ must be followed by 0 or 1"},
	} {
		t.Run(tc.pointer, func(t *testing.T) {
			err := Check(tc.pointer)
			if tc.err == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
			if tc.pointer != "" {
				assert.NotContains(t, err.Error(), tc.pointer, "never quoted")
			}
		})
	}
}
