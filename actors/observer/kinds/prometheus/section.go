package prometheus

import (
	"fmt"
	"regexp"
	"slices"

	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/policy"
)

// Section is a prometheus observer's section: which page to scrape, and
// which of its series to keep. Include and Exclude are RE2 regular
// expressions matched against whole metric names (anchored, as in
// Prometheus relabelling); an empty Include keeps every metric.
type Section struct {
	Path        string            `yaml:"path" doc:"Path of the metrics endpoint, appended to the target URL's path."`
	Include     []string          `yaml:"include" doc:"RE2 expressions: only metrics whose name matches one are reported."`
	Exclude     []string          `yaml:"exclude" doc:"RE2 expressions: metrics whose name matches one are not reported."`
	MatchLabels map[string]string `yaml:"match_labels" doc:"Exact label values a sample must have to be reported."`
	SampleLimit int               `yaml:"sample_limit" doc:"Samples one observation reports at most."`
}

// SetDefaults sets /metrics and 1000 samples.
func (m *Section) SetDefaults() {
	m.Path = "/metrics"
	m.SampleLimit = 1000
}

// maxSampleLimit bounds sample_limit, what one observation may carry.
const maxSampleLimit = 1_000_000

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// ExtendSchema gives the schema what Validate checks with the section's
// own constants and expressions.
func (*Section) ExtendSchema(s *yamldoc.Schema) {
	s.Properties["path"].Pattern = policy.RequestPathPattern
	s.Properties["match_labels"].PropertyNames = &yamldoc.Schema{Pattern: labelName.String()}
	lowest, highest := 1.0, float64(maxSampleLimit)
	s.Properties["sample_limit"].Minimum, s.Properties["sample_limit"].Maximum = &lowest, &highest
}

// Validate checks the section.
func (m *Section) Validate(c *policy.SectionContext) {
	if err := policy.CheckRequestPath(m.Path); err != nil {
		c.Addf("path", "%v", err)
	}
	for _, list := range []struct {
		key      string
		patterns []string
	}{{"include", m.Include}, {"exclude", m.Exclude}} {
		for i, pattern := range list.patterns {
			if _, err := compileMetricPattern(pattern); err != nil {
				c.Addf(fmt.Sprintf("%s[%d]", list.key, i), "invalid regular expression: %v", policy.RegexpReason(err))
			}
		}
	}
	for label := range m.MatchLabels {
		if !labelName.MatchString(label) {
			c.Addf(yamldoc.PathKey("match_labels", label), "invalid Prometheus label name")
		}
	}
	if m.SampleLimit < 1 || m.SampleLimit > maxSampleLimit {
		c.Addf("sample_limit", "must be between 1 and %d, got %d", maxSampleLimit, m.SampleLimit)
	}
}

// Normalize spells empty lists and maps as none.
func (m *Section) Normalize() {
	if len(m.Include) == 0 {
		m.Include = nil
	}
	if len(m.Exclude) == 0 {
		m.Exclude = nil
	}
	if len(m.MatchLabels) == 0 {
		m.MatchLabels = nil
	}
}

// compileMetricPattern anchors a pattern at both ends, as Prometheus does
// in relabelling, so that "up" does not select "backup_duration".
func compileMetricPattern(pattern string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(pattern); err != nil {
		return nil, err // reported against the pattern as written
	}
	return regexp.Compile("^(?:" + pattern + ")$")
}

// MetricFilter returns the predicate selecting metric names: kept when
// Include is empty or one of its patterns matches, and none of Exclude does.
func (m *Section) MetricFilter() (func(name string) bool, error) {
	compile := func(patterns []string) ([]*regexp.Regexp, error) {
		out := make([]*regexp.Regexp, len(patterns))
		for i, pattern := range patterns {
			re, err := compileMetricPattern(pattern)
			if err != nil {
				return nil, fmt.Errorf("compile metric pattern %q: %w", pattern, err)
			}
			out[i] = re
		}
		return out, nil
	}
	include, err := compile(m.Include)
	if err != nil {
		return nil, err
	}
	exclude, err := compile(m.Exclude)
	if err != nil {
		return nil, err
	}
	matches := func(res []*regexp.Regexp, name string) bool {
		return slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(name) })
	}
	return func(name string) bool {
		return (len(include) == 0 || matches(include, name)) && !matches(exclude, name)
	}, nil
}
