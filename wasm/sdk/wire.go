package sdk

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// The messages of proto/polar/observer/v1/plugin.proto: their layouts
// written here, the encoding protowire's, the low-level API of the
// protobuf runtime the daemon's generated types use. Why not the generated
// types, or easyproto: doc.go. wire_test.go checks every function against
// the generated types. Field numbers are the .proto's.

// appendObservation appends o encoded as a PluginObservation, growing b
// once: in the sandbox every allocation, and the collections it brings,
// costs several times what it does natively.
func appendObservation(b []byte, o *Observation) []byte {
	b = slices.Grow(b, sizeString(1, o.TypeSuffix)+sizeVarint(2, uint64(o.Severity))+sizeString(3, o.Subject)+
		sizeString(4, string(o.Payload))+sizeString(5, o.Schema)+sizeMap(6, o.Labels)+sizeVarint(7, uint64(o.Result))+
		sizeString(8, o.Error))
	b = appendString(b, 1, o.TypeSuffix)
	b = appendVarint(b, 2, uint64(o.Severity))
	b = appendString(b, 3, o.Subject)
	b = appendBytes(b, 4, o.Payload)
	b = appendString(b, 5, o.Schema)
	b = appendMap(b, 6, o.Labels)
	b = appendVarint(b, 7, uint64(o.Result))
	return appendString(b, 8, o.Error)
}

// appendHTTPRequest appends r encoded as an HttpRequest with method.
func appendHTTPRequest(b []byte, method string, r *HTTPRequest) []byte {
	b = appendString(b, 1, method)
	b = appendString(b, 2, r.URL)
	b = appendMap(b, 3, r.Header)
	b = appendBytes(b, 4, r.Body)
	for _, p := range r.Extract {
		// A repeated field keeps its empty strings: "" is the whole document.
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendString(b, p)
	}
	return b
}

// decodeObserveRequest decodes an ObserveRequest. Config and state alias b.
func decodeObserveRequest(b []byte) (*Request, error) {
	r := &Request{}
	err := eachField(b, func(num protowire.Number, v []byte, x uint64) error {
		switch num {
		case 1:
			r.Observer = string(v)
		case 2:
			return eachField(v, func(num protowire.Number, v []byte, _ uint64) error {
				switch num {
				case 1:
					r.Target.Name = string(v)
				case 2:
					r.Target.URL = string(v)
				}
				return nil
			})
		case 3:
			r.ConfigJSON = v
		case 4:
			var sec, nsec int64
			err := eachField(v, func(num protowire.Number, _ []byte, x uint64) error {
				switch num {
				case 1:
					sec = int64(x)
				case 2:
					nsec = int64(int32(x))
				}
				return nil
			})
			r.Time = time.Unix(sec, nsec).UTC()
			return err
		case 5:
			r.State = v
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode ObserveRequest: %w", err)
	}
	return r, nil
}

// decodeHTTPResponse decodes an HttpResponse. Its maps are made at their
// size, counted first: growing them costs more than the count in the
// sandbox.
func decodeHTTPResponse(b []byte) (*Response, error) {
	var headers, values int
	if err := eachField(b, func(num protowire.Number, _ []byte, _ uint64) error {
		switch num {
		case 2:
			headers++
		case 5:
			values++
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("decode HttpResponse: %w", err)
	}
	r := &Response{}
	err := eachField(b, func(num protowire.Number, v []byte, x uint64) error {
		switch num {
		case 1:
			r.StatusCode = int(int32(x))
		case 2:
			if r.Header == nil {
				r.Header = make(map[string]string, headers)
			}
			return decodeMapEntry(v, r.Header)
		case 3:
			r.Body = v
		case 4:
			r.Truncated = x != 0
		case 5:
			if r.Values == nil {
				r.Values = make(map[string]string, values)
			}
			return decodeMapEntry(v, r.Values)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode HttpResponse: %w", err)
	}
	return r, nil
}

// eachField calls f with every length-delimited field of the message b (v
// is its content) and every varint field (x is its value), and skips the
// other wire types. A field the caller does not know is ignored, so that a
// host may add fields to the ABI's messages. A field of another wire type
// than its number has (a malformed message) reaches f with a zero v or x.
func eachField(b []byte, f func(num protowire.Number, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType && typ != protowire.VarintType {
			continue
		}
		if err := f(num, v, x); err != nil {
			return err
		}
	}
	return nil
}

// decodeMapEntry decodes one entry of a map<string, string> into m.
func decodeMapEntry(b []byte, m map[string]string) error {
	var k, v string
	err := eachField(b, func(num protowire.Number, b []byte, _ uint64) error {
		switch num {
		case 1:
			k = string(b)
		case 2:
			v = string(b)
		}
		return nil
	})
	m[k] = v
	return err
}

// appendString, appendBytes and appendVarint append a field, or nothing for
// the zero value, as proto3 does.

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendVarint(b []byte, num protowire.Number, x uint64) []byte {
	if x == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, x)
}

// appendMap appends m as a map<string, string> field, in key order so that
// the same map always encodes to the same bytes. Each entry is written in
// place after its length, not built in a slice of its own and copied.
func appendMap(b []byte, num protowire.Number, m map[string]string) []byte {
	if len(m) == 1 { // one key is in order: no slice of keys to sort
		for k, v := range m {
			b = appendMapEntry(b, num, k, v)
		}
		return b
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b = appendMapEntry(b, num, k, m[k])
	}
	return b
}

func appendMapEntry(b []byte, num protowire.Number, k, v string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(sizeString(1, k)+sizeString(2, v)))
	b = appendString(b, 1, k)
	return appendString(b, 2, v)
}

// sizeMap is the size of what appendMap appends.
func sizeMap(num protowire.Number, m map[string]string) int {
	n := 0
	for k, v := range m {
		n += protowire.SizeTag(num) + protowire.SizeBytes(sizeString(1, k)+sizeString(2, v))
	}
	return n
}

// sizeVarint is the size of what appendVarint appends.
func sizeVarint(num protowire.Number, x uint64) int {
	if x == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(x)
}

// sizeString is the size of what appendString appends.
func sizeString(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}
