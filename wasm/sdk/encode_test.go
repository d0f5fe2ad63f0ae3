//go:build !wasip1

package sdk

import (
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// What the host sends, encoded the way the daemon does, for the tests of
// this module, which do not require the daemon's generated types (the
// daemon's own tests check the SDK against those).

// encodeRequest encodes r as an ObserveRequest.
func encodeRequest(r *Request) []byte {
	var b []byte
	b = appendString(b, 1, r.Observer)
	var target []byte
	target = appendString(target, 1, r.Target.Name)
	target = appendString(target, 2, r.Target.URL)
	if len(target) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, target)
	}
	b = appendBytes(b, 3, r.ConfigJSON)
	if !r.Time.IsZero() {
		var ts []byte
		ts = appendVarint(ts, 1, uint64(r.Time.Unix()))
		ts = appendVarint(ts, 2, uint64(r.Time.Nanosecond()))
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendBytes(b, ts)
	}
	return appendBytes(b, 5, r.State)
}

// encodeResponse encodes r as an HttpResponse.
func encodeResponse(r *Response) []byte {
	var b []byte
	b = appendVarint(b, 1, uint64(int32(r.StatusCode)))
	b = appendMap(b, 2, r.Header)
	b = appendBytes(b, 3, r.Body)
	if r.Truncated {
		b = appendVarint(b, 4, 1)
	}
	return appendMap(b, 5, r.Values)
}

// at is a fixed request time.
var at = time.Date(2025, 3, 1, 12, 30, 0, 123456789, time.UTC)
