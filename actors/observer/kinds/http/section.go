package http

import (
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/jsonpointer"
	"github.com/polar/observerd/policy"
)

// Section is an http observer's section: which request to send to the
// target, and what its answer must be.
type Section struct {
	Method          string            `yaml:"method" doc:"HTTP method of the request."`
	Path            string            `yaml:"path" doc:"Path (and query) of the request, appended to the target URL's path."`
	Headers         map[string]string `yaml:"headers" doc:"Request headers, such as an Authorization the target needs."`
	ExpectStatus    []int             `yaml:"expect_status" schema:"minItems=1" doc:"Statuses that make the observation a success."`
	MaxBodyBytes    yamldoc.ByteSize  `yaml:"max_body_bytes" schema:"min=1" doc:"How much of the body is read, such as 64KiB; at most the daemon's limits.max_response_bytes."`
	BodyMatch       string            `yaml:"body_match" doc:"RE2 regular expression the body must match for a success."`
	Extract         []string          `yaml:"extract" doc:"JSON pointers (RFC 6901) of values of a JSON body to report in the observation."`
	FollowRedirects bool              `yaml:"follow_redirects" doc:"Follow redirects, each hop checked against the daemon's allowed_targets."`
	MaxRedirects    int               `yaml:"max_redirects" doc:"Redirects followed at most."`
}

// SetDefaults sets GET /, expecting 200, reading up to 64KiB.
func (h *Section) SetDefaults() {
	h.Method = "GET"
	h.Path = "/"
	h.ExpectStatus = []int{200}
	h.MaxBodyBytes = 64 * yamldoc.KiB
	h.MaxRedirects = 3
}

// maxRedirects bounds max_redirects: more is a loop, not a service.
const maxRedirects = 20

// ExtendSchema gives the schema what Validate checks with the section's
// own constants and expressions.
func (*Section) ExtendSchema(s *yamldoc.Schema) {
	s.Properties["method"].Pattern = token.String()
	s.Properties["path"].Pattern = policy.RequestPathPattern
	lowest, highest := 100.0, 599.0
	s.Properties["expect_status"].Items.Minimum = &lowest
	s.Properties["expect_status"].Items.Maximum = &highest
	s.Properties["extract"].Items.Pattern = "^(/.*)?$"
	noRedirects, mostRedirects := 0.0, float64(maxRedirects)
	s.Properties["max_redirects"].Minimum = &noRedirects
	s.Properties["max_redirects"].Maximum = &mostRedirects
	oneRedirect := 1.0
	s.AllOf = append(s.AllOf, &yamldoc.Schema{
		If: &yamldoc.Schema{
			Required:   []string{"follow_redirects"},
			Properties: map[string]*yamldoc.Schema{"follow_redirects": {Const: true}},
		},
		Then: &yamldoc.Schema{Properties: map[string]*yamldoc.Schema{"max_redirects": {Minimum: &oneRedirect}}},
	})
}

// token is an HTTP token (RFC 9110), the syntax of methods and header names.
var token = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// Validate checks the section; the body is read up to the daemon's
// limits.max_response_bytes at most.
func (h *Section) Validate(c *policy.SectionContext) {
	maxBody := c.Env.LimitsOf().MaxResponseBytes
	if !token.MatchString(h.Method) {
		c.Addf("method", "invalid HTTP method: use a token such as GET or HEAD")
	}
	if err := policy.CheckRequestPath(h.Path); err != nil {
		c.Addf("path", "%v", err)
	}
	canonical := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(h.Headers)) { // sorted: stable messages
		value := h.Headers[name]
		key := yamldoc.PathKey("headers", name)
		if !token.MatchString(name) {
			c.Addf(key, "invalid header name")
		}
		if strings.ContainsFunc(value, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
			c.Addf(key, "the value of header %s holds control characters", name)
		}
		canonicalName := http.CanonicalHeaderKey(name)
		if other, dup := canonical[canonicalName]; dup {
			c.Addf(key, "the header is given twice (also as %s)", c.Path(yamldoc.PathKey("headers", other)))
		}
		canonical[canonicalName] = name
	}
	if len(h.ExpectStatus) == 0 {
		c.Addf("expect_status", "at least one status is required")
	}
	for i, status := range h.ExpectStatus {
		if status < 100 || status > 599 {
			c.Addf(fmt.Sprintf("expect_status[%d]", i), "HTTP status must be between 100 and 599, got %d", status)
		}
	}
	if h.MaxBodyBytes < 1 || h.MaxBodyBytes > maxBody {
		c.Addf("max_body_bytes", "must be between 1B and %s (limits.max_response_bytes of the daemon config), got %s", maxBody, h.MaxBodyBytes)
	}
	if h.BodyMatch != "" {
		if _, err := regexp.Compile(h.BodyMatch); err != nil {
			c.Addf("body_match", "invalid regular expression: %v", policy.RegexpReason(err))
		}
	}
	for i, pointer := range h.Extract {
		if err := jsonpointer.Check(pointer); err != nil {
			c.Addf(fmt.Sprintf("extract[%d]", i), "%v", err)
		}
	}
	switch {
	case h.MaxRedirects < 0 || h.MaxRedirects > maxRedirects:
		c.Addf("max_redirects", "must be between 0 and %d, got %d", maxRedirects, h.MaxRedirects)
	case h.FollowRedirects && h.MaxRedirects == 0:
		c.Addf("max_redirects", "must be at least 1 when follow_redirects is true")
	}
}

// Normalize spells header names canonically (they are case-insensitive)
// and an empty extract as none.
func (h *Section) Normalize() {
	if len(h.Extract) == 0 {
		h.Extract = nil
	}
	if len(h.Headers) == 0 {
		h.Headers = nil
		return
	}
	headers := make(map[string]string, len(h.Headers))
	for name, value := range h.Headers {
		headers[http.CanonicalHeaderKey(name)] = value
	}
	h.Headers = headers
}
