package status

import (
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/relayd/relayd/health"
)

// Metrics are relayd's Prometheus metrics. Counters are counted as things
// happen (the daemon wires its listeners and queue to them); gauges are
// read from the status document at each scrape, so they cannot drift.
// Labels are bounded: protocol, account (from the configuration), outcome,
// reason codes and states; never a message ID or an address. Safe for use
// from any goroutine; a nil *Metrics counts nothing.
type Metrics struct {
	reg      *prometheus.Registry
	backend  Backend
	logins   *prometheus.CounterVec
	upAuth   *prometheus.CounterVec
	upFail   *prometheus.CounterVec
	deliver  *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	refused  *prometheus.CounterVec
	notQd    *prometheus.CounterVec
	commit   string
	scrapeAt func() time.Time
}

// NewMetrics returns the metrics of b's daemon.
func NewMetrics(b Backend, version, commit string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), backend: b, commit: commit, scrapeAt: time.Now}
	m.logins = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayd_logins_total",
		Help: "Downstream logins by protocol, account and outcome (ok, bad_credentials, locked_out, limited, refused, upstream_failed)."},
		[]string{"protocol", "account", "outcome"})
	m.upAuth = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayd_upstream_auth_total",
		Help: "Successful upstream authentications and token refreshes, by account and source (token, imap, smtp)."},
		[]string{"account", "source"})
	m.upFail = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayd_upstream_auth_failures_total",
		Help: "Failed upstream authentications and token refreshes, by account, source and reason code."},
		[]string{"account", "source", "reason"})
	m.deliver = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayd_deliveries_total",
		Help: "Delivery attempts of queued messages by account and outcome (delivered, deferred, failed)."},
		[]string{"account", "outcome"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayd_relayed_bytes_total",
		Help: "Bytes relayed between downstream clients and relayd, by protocol and direction (in: from clients)."},
		[]string{"protocol", "direction"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayd_sessions_refused_total",
		Help: "Downstream connections and logins refused by a session limit, by protocol and limit (sessions, per_address, per_account, allow_from, logins)."},
		[]string{"protocol", "limit"})
	m.notQd = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayd_submissions_not_queued_total",
		Help: "Submissions answered 452 because the spool could not store them (a full, read-only or deleted spool directory), by account."},
		[]string{"account"})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "relayd_build_info",
		Help: "relayd's version, commit and Go version; always 1."}, []string{"version", "commit", "goversion"})
	build.WithLabelValues(version, commit, runtime.Version()).Set(1)
	m.reg.MustRegister(m.logins, m.upAuth, m.upFail, m.deliver, m.bytes, m.refused, m.notQd, build, m, prometheus.NewGoCollector())
	return m
}

// Login counts a downstream login.
func (m *Metrics) Login(protocol, account, outcome string) {
	if m != nil {
		m.logins.WithLabelValues(protocol, account, outcome).Inc()
	}
}

// UpstreamAuth counts an upstream authentication or token refresh; reason
// is empty for a success.
func (m *Metrics) UpstreamAuth(account string, src health.Source, reason health.Reason) {
	if m == nil {
		return
	}
	if reason == "" {
		m.upAuth.WithLabelValues(account, string(src)).Inc()
	} else {
		m.upFail.WithLabelValues(account, string(src), string(reason)).Inc()
	}
}

// Delivery counts a delivery attempt's outcome.
func (m *Metrics) Delivery(account, outcome string) {
	if m != nil {
		m.deliver.WithLabelValues(account, outcome).Inc()
	}
}

// NotQueued counts a submission the spool could not store.
func (m *Metrics) NotQueued(account string) {
	if m != nil {
		m.notQd.WithLabelValues(account).Inc()
	}
}

// Refused counts a connection or login a session limit refused.
func (m *Metrics) Refused(protocol, limit string) {
	if m != nil {
		m.refused.WithLabelValues(strings.ToLower(protocol), limit).Inc()
	}
}

// SessionEnd counts the bytes of a downstream session that ended (the
// listeners' proxy.Recorder).
func (m *Metrics) SessionEnd(protocol, account string, in, out uint64) {
	m.Bytes(protocol, "in", in)
	m.Bytes(protocol, "out", out)
}

// Bytes counts bytes relayed; direction is "in" (from clients) or "out".
func (m *Metrics) Bytes(protocol, direction string, n uint64) {
	if m != nil && n > 0 {
		m.bytes.WithLabelValues(protocol, direction).Add(float64(n))
	}
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

var (
	descSessions = prometheus.NewDesc("relayd_sessions_open", "Open downstream sessions by protocol and account.",
		[]string{"protocol", "account"}, nil)
	descState = prometheus.NewDesc("relayd_account_state", "1 for the state each account is in, 0 for the others.",
		[]string{"account", "state"}, nil)
	descExpiry = prometheus.NewDesc("relayd_grant_expiry_timestamp_seconds", "When each account's grant is predicted to end (Unix time).",
		[]string{"account"}, nil)
	descQueue = prometheus.NewDesc("relayd_queue_messages", "Messages in the outbound queue by account and state (queued, held, failed).",
		[]string{"account", "state"}, nil)
	descOldest = prometheus.NewDesc("relayd_queue_oldest_message_age_seconds", "Age of each account's oldest message waiting in the queue.",
		[]string{"account"}, nil)
	descOrphaned = prometheus.NewDesc("relayd_queue_orphaned_messages", "Messages kept in the queue for accounts that are not configured any more, by account.",
		[]string{"account"}, nil)
	descViaFallback = prometheus.NewDesc("relayd_sent_via_fallback_total", "Messages of each account that its fallback account sent (fallback_account) since relayd started.",
		[]string{"account"}, nil)
	descFallbackActive = prometheus.NewDesc("relayd_fallback_active", "1 while an account's mail goes out through its fallback account, else 0; only accounts with a fallback_account.",
		[]string{"account"}, nil)
	descPanics     = prometheus.NewDesc("relayd_panics_recovered_total", "Internal errors (panics) relayd recovered from since it started.", nil, nil)
	descCertExpiry = prometheus.NewDesc("relayd_listener_certificate_expiry_timestamp_seconds", "When the certificate each protocol's downstream listeners present ends (Unix time); only protocols with tls_cert.",
		[]string{"protocol"}, nil)
	descUp   = prometheus.NewDesc("relayd_up", "1 while relayd answers.", nil, nil)
	descWarm = prometheus.NewDesc("relayd_warm_connections", "Warm upstream connections (dialed, TLS-handshaked, greeted) by protocol, account and state: ready, and target (warm_connections; 0 while the account's condition holds the pool).",
		[]string{"protocol", "account", "state"}, nil)
	descWarmLogins = prometheus.NewDesc("relayd_warm_logins_total", "Upstream logins by protocol, account and whether a warm connection served them (served) or none was ready (missed), since the account's pool started.",
		[]string{"protocol", "account", "outcome"}, nil)
	descAccount = prometheus.NewDesc("relayd_account_info", "1 for each configured account, labelled with its provider, direction and transport (smtp or graph).",
		[]string{"account", "provider", "direction", "transport"}, nil)
)

var allStates = []health.State{health.StateOK, health.StateWarning, health.StateDegraded, health.StateNeedsReauth,
	health.StateDisconnected, health.StateNeedsAdmin}

// Describe implements prometheus.Collector for the scrape-time gauges.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessions, descState, descExpiry, descQueue, descOldest, descOrphaned, descViaFallback, descFallbackActive, descPanics, descUp, descAccount, descCertExpiry, descWarm, descWarmLogins} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the status document.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.backend.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descUp, 1)
	ch <- prometheus.MustNewConstMetric(descPanics, prometheus.CounterValue, float64(st.Panics))
	for _, a := range st.Accounts {
		gauge(descAccount, 1, a.Name, a.Provider, a.Direction, a.Transport)
		gauge(descSessions, float64(a.IMAPSessions), "imap", a.Name)
		gauge(descSessions, float64(a.SMTPSessions), "smtp", a.Name)
		gauge(descSessions, float64(a.POP3Sessions), "pop3", a.Name)
		for proto, w := range map[string]*Warm{"imap": a.WarmIMAP, "pop3": a.WarmPOP3} {
			if w == nil {
				continue
			}
			gauge(descWarm, float64(w.Ready), proto, a.Name, "ready")
			gauge(descWarm, float64(w.Target), proto, a.Name, "target")
			ch <- prometheus.MustNewConstMetric(descWarmLogins, prometheus.CounterValue, float64(w.Served), proto, a.Name, "served")
			ch <- prometheus.MustNewConstMetric(descWarmLogins, prometheus.CounterValue, float64(w.Missed), proto, a.Name, "missed")
		}
		for _, s := range allStates {
			v := 0.0
			if a.State == s {
				v = 1
			}
			gauge(descState, v, a.Name, string(s))
		}
		if !a.GrantExpires.IsZero() {
			gauge(descExpiry, float64(a.GrantExpires.Unix()), a.Name)
		}
		if q := a.Queue; q != nil {
			gauge(descQueue, float64(q.Queued), a.Name, "queued")
			gauge(descQueue, float64(q.Held), a.Name, "held")
			gauge(descQueue, float64(q.Failed), a.Name, "failed")
			gauge(descOldest, float64(q.OldestAge), a.Name)
			if fb := q.Fallback; fb != nil {
				// Read from the queue's count, like the panics: it
				// starts again at 0 when relayd does, as counters may.
				ch <- prometheus.MustNewConstMetric(descViaFallback, prometheus.CounterValue, float64(q.SentViaFallback), a.Name)
				active := 0.0
				if fb.Active {
					active = 1
				}
				gauge(descFallbackActive, active, a.Name)
			}
		}
	}
	for _, c := range st.Certificates {
		gauge(descCertExpiry, float64(c.NotAfter.Unix()), c.Protocol)
	}
	for _, o := range st.OrphanedAccounts {
		gauge(descOrphaned, float64(o.Queued+o.Held+o.Failed), o.Account)
	}
}
