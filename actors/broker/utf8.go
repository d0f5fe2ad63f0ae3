package broker

import (
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// validUTF8 replaces the invalid UTF-8 of every string field of m, nested
// messages, lists and maps included, with U+FFFD. protobuf refuses to
// encode such a string, and some come from outside: an error message
// quoting a target's bytes, say. An event must be stored, not wedge the
// committer: the text loses the bytes it could not carry, nothing else.
func validUTF8(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if fixed, ok := fixValue(fd, l.Get(i)); ok {
					l.Set(i, fixed)
				}
			}
		case fd.IsMap():
			mp := v.Map()
			var bad []protoreflect.MapKey
			mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapKey().Kind() == protoreflect.StringKind && !utf8.ValidString(k.String()) {
					bad = append(bad, k)
				} else if fixed, ok := fixValue(fd.MapValue(), mv); ok {
					mp.Set(k, fixed)
				}
				return true
			})
			for _, k := range bad {
				mv := mp.Get(k)
				mp.Clear(k)
				if fixed, ok := fixValue(fd.MapValue(), mv); ok {
					mv = fixed
				}
				mp.Set(protoreflect.ValueOfString(strings.ToValidUTF8(k.String(), "\uFFFD")).MapKey(), mv)
			}
		default:
			if fixed, ok := fixValue(fd, v); ok {
				m.Set(fd, fixed)
			}
		}
		return true
	})
}

// fixValue is v with valid UTF-8 when fd is a string that needs it (ok),
// after fixing a message value in place.
func fixValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) (protoreflect.Value, bool) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if s := v.String(); !utf8.ValidString(s) {
			return protoreflect.ValueOfString(strings.ToValidUTF8(s, "\uFFFD")), true
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		validUTF8(v.Message())
	}
	return v, false
}
