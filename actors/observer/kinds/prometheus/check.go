package prometheus

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/polar/observerd/actors/observer/kinds"
	"github.com/polar/observerd/messages"
)

// check is one prometheus observer's: one scrape per turn.
type check struct {
	spec   *Section
	url    string
	client *http.Client
	access *kinds.TargetAccess
	keep   func(name string) bool
	// maxBytes caps a metrics page (limits.max_response_bytes). A larger
	// page is the wrong path or a runaway exporter, and reading it whole
	// would cost the daemon the memory that sample_limit is there to
	// bound.
	maxBytes int64
}

func newCheck(m *Section, s kinds.Setup) (kinds.Check, error) {
	keep, err := m.MetricFilter()
	if err != nil {
		return nil, err
	}
	c := &check{
		spec: m,
		url:  strings.TrimSuffix(s.Policy.Spec.Target.URL, "/") + m.Path,
		// A metrics page that moved is a misconfigured path: the redirect
		// is reported (status 3xx), not followed.
		client:   s.Access.Client(false, 0),
		access:   s.Access,
		keep:     keep,
		maxBytes: s.MaxResponse,
	}
	return kinds.OneObservation(c.observe), nil
}

func (c *check) observe(ctx context.Context) *messages.Event {
	ev := messages.NewEvent(messages.TypeObservationPrometheus)
	obs := &messages.PrometheusObservation{Url: c.url}
	ev.Data = &messages.Event_Prometheus{Prometheus: obs}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		obs.Result, obs.Error = kinds.Failure(ctx, err)
		return ev
	}
	// Ask for the text format: an exporter built on client_golang would
	// otherwise be free to answer protobuf or OpenMetrics.
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	a, done, err := c.access.Fetch(ctx, c.client, req, c.maxBytes+1)
	// Given back once the page is parsed and dropped: the parser holds
	// more than the page meanwhile, which the unit's memory sizing counts.
	defer done()
	obs.Latency = a.Latency
	switch {
	case err != nil:
		obs.Result, obs.Error = kinds.Failure(ctx, err)
	case a.Status != http.StatusOK:
		obs.Result, obs.Error = messages.Result_RESULT_FAILED, fmt.Sprintf("status %d, expected 200", a.Status)
	case int64(len(a.Body)) > c.maxBytes:
		obs.Result, obs.Error = messages.Result_RESULT_FAILED, fmt.Sprintf("read metrics: larger than %d bytes", c.maxBytes)
	default:
		// A parser per scrape: TextParser keeps state and is not safe
		// for concurrent use.
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(bytes.NewReader(a.Body))
		if err != nil {
			obs.Result, obs.Error = messages.Result_RESULT_FAILED, fmt.Sprintf("parse metrics: %v", err)
			return ev
		}
		obs.Result = messages.Result_RESULT_OK
		obs.Samples, obs.SamplesDropped = c.samples(families)
	}
	return ev
}

// samples selects the series of the scraped families that the policy
// keeps, as typed samples, and counts those beyond sample_limit. Families
// go in name order, so that the limit always keeps the same ones.
func (c *check) samples(families map[string]*dto.MetricFamily) (out []*messages.Sample, dropped int64) {
	for _, name := range slices.Sorted(maps.Keys(families)) {
		if !c.keep(name) {
			continue
		}
		mf := families[name]
		for _, m := range mf.GetMetric() {
			labels := labelsOf(m)
			if !c.matches(labels) {
				continue
			}
			if len(out) == c.spec.SampleLimit {
				dropped++
				continue
			}
			out = append(out, sampleOf(name, mf.GetType(), m, labels))
		}
	}
	return out, dropped
}

// matches reports whether labels hold every match_labels value; an absent
// label has the empty value, as in Prometheus selectors.
func (c *check) matches(labels map[string]string) bool {
	for k, v := range c.spec.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func labelsOf(m *dto.Metric) map[string]string {
	if len(m.GetLabel()) == 0 {
		return nil
	}
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// sampleOf converts one series of family name, of type typ.
func sampleOf(name string, typ dto.MetricType, m *dto.Metric, labels map[string]string) *messages.Sample {
	s := &messages.Sample{Name: name, Labels: labels}
	switch typ {
	case dto.MetricType_COUNTER:
		s.Type, s.Value = messages.MetricType_METRIC_TYPE_COUNTER, m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		s.Type, s.Value = messages.MetricType_METRIC_TYPE_GAUGE, m.GetGauge().GetValue()
	case dto.MetricType_UNTYPED:
		s.Type, s.Value = messages.MetricType_METRIC_TYPE_UNTYPED, m.GetUntyped().GetValue()
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		h := m.GetHistogram()
		s.Type = messages.MetricType_METRIC_TYPE_HISTOGRAM
		s.Count, s.Sum = count(h.GetSampleCount(), h.GetSampleCountFloat()), h.GetSampleSum()
		for _, b := range h.GetBucket() {
			s.Buckets = append(s.Buckets, &messages.Bucket{
				UpperBound:      b.GetUpperBound(),
				CumulativeCount: count(b.GetCumulativeCount(), b.GetCumulativeCountFloat()),
			})
		}
	case dto.MetricType_SUMMARY:
		q := m.GetSummary()
		s.Type = messages.MetricType_METRIC_TYPE_SUMMARY
		s.Count, s.Sum = q.GetSampleCount(), q.GetSampleSum()
		for _, x := range q.GetQuantile() {
			s.Quantiles = append(s.Quantiles, &messages.Quantile{Quantile: x.GetQuantile(), Value: x.GetValue()})
		}
	}
	return s
}

// count is a histogram count, which the parser keeps as a float when the
// page wrote any count of the histogram with a fraction.
func count(whole uint64, float float64) uint64 {
	if float != 0 {
		return uint64(float)
	}
	return whole
}
