// Package metrics holds smtpcreds' Prometheus collectors, exposed on the
// operator listener (never the public API) so that operators can watch it.
//
// A nil *Metrics records nothing, so callers need no checks when metrics are
// off.
package metrics

import (
	"context"
	"database/sql"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the set of collectors of one process.
type Metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	rateLimited  *prometheus.CounterVec
	authFailures prometheus.Counter
}

// New registers the collectors, with the Go runtime's and the process's.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smtpcreds_http_requests_total",
			Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "smtpcreds_http_request_duration_seconds",
			Help:    "HTTP request latency by route and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smtpcreds_rate_limit_rejections_total",
			Help: "Requests refused with 429, by limit (account or auth_failures).",
		}, []string{"limit"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smtpcreds_auth_failures_total",
			Help: "Requests refused with 401.",
		}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.rateLimited, m.authFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveRequest records one finished request. route is the route pattern
// (never the raw path, which would explode the label space).
func (m *Metrics) ObserveRequest(route, method string, status int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route, method).Observe(d.Seconds())
}

// RateLimited counts a 429 of limit "account" or "auth_failures".
func (m *Metrics) RateLimited(limit string) {
	if m != nil {
		m.rateLimited.WithLabelValues(limit).Inc()
	}
}

// AuthFailed counts a 401.
func (m *Metrics) AuthFailed() {
	if m != nil {
		m.authFailures.Inc()
	}
}

// RegisterDB exports the statistics of a connection pool under name.
func (m *Metrics) RegisterDB(name string, db *sql.DB) {
	if m != nil {
		m.reg.MustRegister(collectors.NewDBStatsCollector(db, name))
	}
}

// QueueStats reports the sync outbox: unfinished jobs and the creation time
// of the oldest (nil when none).
type QueueStats func(ctx context.Context) (pending int64, oldest *time.Time, err error)

// RegisterQueue exports the sync backlog, read at each scrape.
func (m *Metrics) RegisterQueue(stats QueueStats) {
	if m != nil {
		m.reg.MustRegister(&queueCollector{stats: stats})
	}
}

// Register adds a collector of another part of the process.
func (m *Metrics) Register(c prometheus.Collector) { m.reg.MustRegister(c) }

// Handler serves the Prometheus exposition.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

var (
	queueDepth = prometheus.NewDesc("smtpcreds_sync_queue_depth", "Sync jobs not yet applied.", nil, nil)
	queueAge   = prometheus.NewDesc("smtpcreds_sync_oldest_pending_age_seconds", "Age of the oldest unapplied sync job (0 when none).", nil, nil)
	queueUp    = prometheus.NewDesc("smtpcreds_sync_queue_stats_up", "Whether the sync backlog could be read at this scrape.", nil, nil)
)

type queueCollector struct{ stats QueueStats }

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepth
	ch <- queueAge
	ch <- queueUp
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pending, oldest, err := c.stats(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(queueUp, prometheus.GaugeValue, 0)
		return
	}
	age := 0.0
	if oldest != nil {
		age = time.Since(*oldest).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(queueUp, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(queueDepth, prometheus.GaugeValue, float64(pending))
	ch <- prometheus.MustNewConstMetric(queueAge, prometheus.GaugeValue, age)
}
