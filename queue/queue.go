package queue

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
)

// Options configure a Queue. Zero values take the defaults named.
type Options struct {
	// Dir is the spool directory. Required.
	Dir string
	// WrapFS, when set, wraps the spool's file system (tests inject
	// faults with it). Default: the real one.
	WrapFS func(FS) FS
	Logger *slog.Logger
	// Accounts returns an account's upstream credentials, or nil. Required.
	Accounts func(name string) *auth.Account
	// Hostname names relayd in EHLO, Received: headers and DSNs. Default:
	// the host name.
	Hostname string
	// RetryMin is the first retry delay after a temporary failure, doubled
	// per attempt (with ±10% jitter) up to RetryMax. Defaults 1 and 30
	// minutes.
	RetryMin, RetryMax time.Duration
	// Lifetime is how long a message may stay queued (not counting time its
	// account held it) before it bounces. Default 5 days.
	Lifetime time.Duration
	Now      func() time.Time
	// Transport hands messages to the provider (package transport/smtp).
	// Required to deliver (Run).
	Transport Transport
	// OnEvent, when set, is called after deliveries and state changes
	// (for tests and the status socket's waiters).
	OnEvent func(Event)
	// LockWait is how long Open waits while another process holds the
	// spool (a relayd queue command running as the daemon starts).
	// Default 0: fail at once with ErrSpoolBusy.
	LockWait time.Duration
}

// EventKind is what happened in an Event.
type EventKind string

// Event kinds.
const (
	EventQueued    EventKind = "queued"
	EventDelivered EventKind = "delivered"
	EventDeferred  EventKind = "deferred"
	EventFailed    EventKind = "failed"
	EventHeld      EventKind = "held"     // an account's mail is held (ID empty)
	EventReleased  EventKind = "released" // an account's hold ended (ID empty)
	// EventNotQueued: the spool could not store a submission (a full,
	// read-only or deleted spool directory); the client was told to try
	// again later. The ID was never stored.
	EventNotQueued EventKind = "not_queued"
)

// Event reports something the queue did.
type Event struct {
	Kind    EventKind
	ID      string
	Account string
	// Via names the fallback account whose mailbox carried the attempt
	// (fallback_account); empty when the account sent its own mail.
	Via string
}

// Queue is the outbound queue. Its methods are safe for use from any
// goroutine.
type Queue struct {
	opts  Options
	log   *slog.Logger
	spool *Spool
	// storeFailing is set while submissions cannot be stored (under mu).
	storeFailing *StoreFailure
	lock         *os.File // held until Close: see lockSpool

	// held records the accounts an admin held, as the spool keeps them
	// (held-accounts.list); the hold itself is the account's (health).
	// holdStarts records, as the spool keeps them
	// (condition-holds.list), when each account's hold for its condition
	// began; the hold itself is the account's (health).
	hmu        sync.Mutex
	held       map[string]bool
	holdStarts map[string]time.Time
	// rewrite records, as the spool keeps them (fallback-rewrite.list),
	// the accounts whose fallback was refused Send As in keep mode and
	// rewrites From until they are reauthorized (fallback.go).
	rewrite map[string]bool
	// saveMu keeps the spool's copy of holdStarts in the order of the
	// changes.
	saveMu sync.Mutex

	mu       sync.Mutex
	entries  map[string]*Entry // every message; each also in its account's entries
	busy     map[string]bool   // being delivered
	accounts map[string]*account
	ctx      context.Context // set by Run
	wg       sync.WaitGroup
	// leftovers are delivered messages whose files could not be removed
	// (leftover.go); sweeping is set while a goroutine retries them.
	leftovers map[string]bool
	sweeping  bool
}

// account is an account's delivery state.
type account struct {
	name string
	kick chan struct{}
	// entries are the account's messages, so that scheduling and
	// statistics cost the account's backlog, not the whole queue's.
	entries map[string]*Entry
	// orphan is the condition of an account that is not configured
	// any more (its mail stays, held).
	orphan *health.Account
	// probeAt is when to try the upstream again after a connection or
	// TLS failure or a temporary AUTH condition (the account's health
	// says whether there is one), backoff the pause that led there.
	probeAt time.Time
	backoff time.Duration

	lastSend time.Time
	// throttledUntil: the provider asked to wait (Graph's 429 or 503 with
	// Retry-After, which is per app and mailbox): nothing goes out
	// through this account's credentials before then.
	throttledUntil time.Time
	running        bool

	// conns counts the upstream connections open with this account's
	// credentials, its own deliveries' and those of accounts it is the
	// fallback of, against its limit (smtp_connections); connFreed is
	// closed when one closes.
	conns     int
	connFreed chan struct{}
	// sentViaFallback counts this account's messages its fallback
	// account sent; fallbackOn says its mail goes through the fallback
	// now (logged once per hold).
	sentViaFallback int64
	fallbackOn      bool
	// lastDelivered is when a message of the account last reached all
	// its recipients.
	lastDelivered time.Time

	// holdMu makes checkHold one at a time for the account: the worker
	// and an admin's release both call it, and a hold must end (and be
	// credited to lifetimes) once.
	holdMu sync.Mutex
}

// Hold is why an account's mail (or one message) waits: its condition
// (package health, which owns it) or an admin's hold, and what releases
// it. Status shows it with the queue's statistics; flush, retry and
// release answer with it for what they could not send.
type Hold struct {
	// Account is whose mail is held; ID is set when one message is held
	// of its own (an admin's hold of it, or quarantine). Both are left
	// out in an account's statistics.
	Account string `json:"account,omitempty"`
	ID      string `json:"id,omitempty"`
	// State is the account's state; Reason is admin_hold, quarantined,
	// or the holding condition's reason code.
	State  health.State  `json:"state"`
	Reason health.Reason `json:"reason,omitempty"`
	Advice string        `json:"advice"`
	Since  time.Time     `json:"since"`
	// Release is what releases it, in words.
	Release string `json:"release,omitempty"`
}

// Open opens the spool, recovers its messages and returns the queue. Call
// Run to deliver.
func Open(opts Options) (*Queue, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Hostname == "" {
		opts.Hostname, _ = os.Hostname()
		if opts.Hostname == "" {
			opts.Hostname = "localhost"
		}
	}
	if opts.RetryMin == 0 {
		opts.RetryMin = time.Minute
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = 30 * time.Minute
	}
	if opts.Lifetime == 0 {
		opts.Lifetime = 5 * 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	sp, err := OpenSpool(opts.Dir, opts.WrapFS)
	if err != nil {
		return nil, err
	}
	lock, err := lockSpool(sp.real.top, opts.LockWait)
	if err != nil {
		sp.Close()
		return nil, err
	}
	q := &Queue{
		opts: opts, log: opts.Logger, spool: sp, lock: lock,
		entries: map[string]*Entry{}, busy: map[string]bool{}, accounts: map[string]*account{},
		held: map[string]bool{}, holdStarts: map[string]time.Time{}, rewrite: map[string]bool{},
	}
	entries, err := sp.Recover()
	if err != nil {
		q.Close()
		return nil, err
	}
	latest := opts.Now().Add(opts.RetryMax)
	for _, e := range entries {
		// A stored retry is a wall-clock time: after the clock went back
		// (or was fast when it was written) it may lie further ahead than
		// any backoff relayd gives. None waits longer than RetryMax.
		if e.NextAttempt.After(latest) {
			e.NextAttempt = latest
		}
		q.add(e)
	}
	if len(entries) > 0 {
		q.log.Info("queue recovered", "messages", len(entries))
	}
	rec := sp.LastRecovery()
	if rec.Torn > 0 {
		q.log.Info("queue: removed the remains of submissions a crash interrupted before their 250 (their clients were told nothing and send again)", "files", rec.Torn)
	}
	for _, f := range rec.Damaged {
		q.log.Warn("queue: a spool file failed its check after a boot (its sum, metadata or ID is wrong: torn by a power cut, or damaged on the disk): set aside and not sent; if it holds a message that was acknowledged, look at it and send it again, else remove it", "file", f)
	}
	for _, f := range rec.Newer {
		q.log.Warn("queue: a spool file was written by a newer relayd: left as it is and not sent; run that version again to send it", "file", f)
	}
	held, err := sp.HeldAccounts()
	if err != nil {
		q.Close()
		return nil, err
	}
	if q.holdStarts, err = sp.HoldStarts(); err != nil {
		q.Close()
		return nil, err
	}
	for _, name := range held {
		q.held[name] = true
		q.log.Info("account's outgoing mail held by an admin: relayd queue release NAME sends it", "account", name)
	}
	rewrites, err := sp.ForcedRewrites()
	if err != nil {
		q.Close()
		return nil, err
	}
	for _, name := range rewrites {
		q.rewrite[name] = true
	}
	return q, nil
}

// SetSchedule changes the retry schedule and the lifetime (a reload); it
// applies from the next attempt.
func (q *Queue) SetSchedule(retryMin, retryMax, lifetime time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.opts.RetryMin, q.opts.RetryMax, q.opts.Lifetime = retryMin, retryMax, lifetime
}

// recordAdminHold records in the spool that an admin holds (or released)
// account name, so that the hold survives a restart.
func (q *Queue) recordAdminHold(name string, on bool) error {
	q.hmu.Lock()
	defer q.hmu.Unlock()
	if q.held[name] == on {
		return nil
	}
	if on {
		q.held[name] = true
	} else {
		delete(q.held, name)
	}
	names := slices.Sorted(maps.Keys(q.held))
	return q.spool.SaveHeldAccounts(names)
}

// account returns the delivery state of name, creating it. q.mu is held or
// the queue is not shared yet.
func (q *Queue) account(name string) *account {
	a := q.accounts[name]
	if a == nil {
		a = &account{name: name, kick: make(chan struct{}, 1), entries: map[string]*Entry{},
			orphan: health.New(name, health.Options{Logger: q.log, Now: q.opts.Now})}
		q.accounts[name] = a
		if q.ctx != nil {
			q.startWorker(a)
		}
	}
	return a
}

func (a *account) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (q *Queue) startWorker(a *account) {
	if a.running {
		return
	}
	a.running = true
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		q.worker(q.ctx, a)
	}()
}

// Run delivers until ctx ends, then waits for deliveries in progress.
func (q *Queue) Run(ctx context.Context) {
	q.mu.Lock()
	q.ctx = ctx
	for _, a := range q.accounts {
		q.startWorker(a)
	}
	q.mu.Unlock()
	<-ctx.Done()
	q.wg.Wait()
}

func (q *Queue) event(kind EventKind, id, acct string) {
	q.eventVia(kind, id, acct, "")
}

// eventVia reports an event about account acct's message that went
// through the fallback account via.
func (q *Queue) eventVia(kind EventKind, id, acct, via string) {
	if q.opts.OnEvent != nil {
		q.opts.OnEvent(Event{Kind: kind, ID: id, Account: acct, Via: via})
	}
}

// Submission is a message to queue.
type Submission struct {
	Account string
	From    string
	To      []string
	// Trace returns the header lines (each ending in CRLF) to prepend for
	// the queue ID: the Received: trace header (RFC 5321 §4.4).
	Trace func(id string) string
	Body  io.Reader
	// DSN marks a delivery status notification.
	DSN bool
}

// maxHeaderScan bounds how much of a message's header relayd buffers to
// look for a Message-ID.
const maxHeaderScan = 256 << 10

// Submit stores a message durably and returns its queue ID. When it returns
// nil the message survives a crash.
func (q *Queue) Submit(s *Submission) (string, error) {
	now := q.opts.Now()
	e := &Entry{
		ID: newID(now), Account: s.Account, From: s.From, Created: now,
		State: StateQueued, NextAttempt: now, DSN: s.DSN,
	}
	for _, to := range s.To {
		e.Recipients = append(e.Recipients, Recipient{Addr: to, State: RcptPending})
	}
	br := headerReaders.Get().(*bufio.Reader)
	br.Reset(s.Body)
	defer func() {
		br.Reset(nil) // holds no client's reader while pooled
		headerReaders.Put(br)
	}()
	header, msgID, err := scanHeader(br)
	if err != nil {
		return "", err
	}
	var prefix strings.Builder
	if s.Trace != nil {
		prefix.WriteString(s.Trace(e.ID))
	}
	if msgID == "" {
		// A resend after a crash must be recognisable (docs/decisions.md).
		msgID = "<" + e.ID + "@" + q.opts.Hostname + ">"
		prefix.WriteString("Message-ID: " + msgID + "\r\n")
	}
	e.MessageID = msgID
	body := io.MultiReader(strings.NewReader(prefix.String()), bytes.NewReader(header), br)
	if err := q.spool.Put(e, body); err != nil {
		q.storeFailed(err)
		q.event(EventNotQueued, e.ID, e.Account)
		return "", err // the caller tells its client
	}
	q.mu.Lock()
	a := q.add(e)
	q.storeFailing = nil
	q.mu.Unlock()
	a.wake()
	q.event(EventQueued, e.ID, e.Account)
	return e.ID, nil
}

// StoreFailure is the spool failing to store submissions: since when,
// how many were refused, and the last error. It lasts until a submission
// is stored again.
type StoreFailure struct {
	Since     time.Time `json:"since"`
	Refused   int       `json:"refused"`
	LastError string    `json:"last_error"`
}

func (q *Queue) storeFailed(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.storeFailing == nil {
		q.storeFailing = &StoreFailure{Since: q.opts.Now()}
	}
	q.storeFailing.Refused++
	q.storeFailing.LastError = err.Error()
}

// StoreFailing reports the spool failing to store submissions (a full
// disk, a read-only or deleted state directory), or nil when the last
// submission was stored. Safe from any goroutine.
func (q *Queue) StoreFailing() *StoreFailure {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.storeFailing == nil {
		return nil
	}
	f := *q.storeFailing
	return &f
}

// headerReaders are Submit's readers (32 KiB each): pooled, not garbage
// per message.
var headerReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}

// scanHeader reads the message header (up to maxHeaderScan bytes) and
// returns it with the value of its Message-ID field, if any.
func scanHeader(br *bufio.Reader) ([]byte, string, error) {
	var header []byte
	msgID := ""
	for len(header) < maxHeaderScan {
		line, err := br.ReadSlice('\n')
		header = append(header, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return header, msgID, nil
		}
		if err != nil {
			return nil, "", err
		}
		if len(line) <= 2 && strings.TrimRight(string(line), "\r\n") == "" {
			break // end of header
		}
		if len(line) > 11 && strings.EqualFold(string(line[:11]), "message-id:") {
			msgID = strings.TrimSpace(string(line[11:]))
		}
	}
	return header, msgID, nil
}

// backoff is the delay before attempt n+1 after n failures.
func (q *Queue) backoff(attempts int) time.Duration {
	d := q.opts.RetryMin
	for i := 1; i < attempts && d < q.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, q.opts.RetryMax)
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + jitter
}

// AccountAdded wakes the worker of account name, which a reload added (or
// added back): mail it kept while the account was not configured is
// looked at now, under the account's own condition.
func (q *Queue) AccountAdded(name string) {
	q.mu.Lock()
	a := q.accounts[name]
	q.mu.Unlock()
	if a != nil {
		a.wake()
	}
}

// AccountStats summarises an account's queue for the status socket.
type AccountStats struct {
	Queued    int   `json:"queued"`
	Held      int   `json:"held"`
	Failed    int   `json:"failed"`
	OldestAge int64 `json:"oldest_age_seconds"`
	Hold      *Hold `json:"hold,omitempty"`
	// Outage: the upstream SMTP server cannot be reached (the account's
	// condition, smtp_unreachable, says since when and why).
	Outage bool `json:"outage,omitempty"`
	// SentViaFallback counts the account's messages that its fallback
	// account sent since relayd started (fallback_account).
	SentViaFallback int64 `json:"sent_via_fallback"`
	// Fallback is the account's fallback mailbox and what it does now;
	// nil when the account has none.
	Fallback *FallbackStats `json:"fallback,omitempty"`
	// LastDelivery is when one of the account's messages was last
	// delivered, since relayd started; zero: none yet.
	LastDelivery time.Time `json:"last_delivery,omitzero"`
}

// Stats returns the queue statistics of account name.
func (q *Queue) Stats(name string) AccountStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	var st AccountStats
	now := q.opts.Now()
	a := q.accounts[name]
	st.Fallback = q.fallbackStats(name, a, now)
	if a == nil {
		return st
	}
	st.SentViaFallback = a.sentViaFallback
	st.LastDelivery = a.lastDelivered
	h := q.health(a)
	held, why, _ := h.Outgoing()
	for _, e := range a.entries {
		switch {
		case e.State == StateFailed:
			st.Failed++
		case e.AdminHold || held:
			st.Held++
		default:
			st.Queued++
		}
		if e.State != StateFailed {
			st.OldestAge = max(st.OldestAge, int64(now.Sub(e.Created)/time.Second))
		}
	}
	if held {
		hold := accountHold(a.name, h, why)
		hold.Account = ""
		st.Hold = &hold
	}
	st.Outage = inOutage(h)
	return st
}

// Orphan is the queue of an account that is not configured any more: its
// mail stays on disk, held, until the account is added back or an admin
// deletes it ('relayd queue delete NAME').
type Orphan struct {
	Account string `json:"account"`
	AccountStats
}

// Orphans returns the queues of accounts that have mail but are not
// configured, by name.
func (q *Queue) Orphans() []Orphan {
	q.mu.Lock()
	var names []string
	for name, a := range q.accounts {
		if len(a.entries) > 0 && q.opts.Accounts(name) == nil {
			names = append(names, name)
		}
	}
	q.mu.Unlock()
	sort.Strings(names)
	l := make([]Orphan, 0, len(names))
	for _, name := range names {
		l = append(l, Orphan{Account: name, AccountStats: q.Stats(name)})
	}
	return l
}

// inOutage reports whether h's upstream (its SMTP server, or Microsoft
// Graph) cannot be reached.
func inOutage(h *health.Account) bool {
	return outage(h) != nil
}

// outage is the condition of h's unreachable upstream, or nil.
func outage(h *health.Account) *health.Error {
	for _, src := range []health.Source{health.SourceSMTP, health.SourceGraph} {
		if c := h.Condition(src); c != nil && c.Outage() {
			return c
		}
	}
	return nil
}

// outSource is where account a's outgoing mail meets its upstream:
// health.SourceGraph for transport = "graph", else health.SourceSMTP.
func outSource(a *auth.Account) health.Source {
	if a.Config.Graph() {
		return health.SourceGraph
	}
	return health.SourceSMTP
}

// health returns the condition of a's account: the configured account's,
// or, for one no longer configured, the queue's own record. An admin's
// hold recorded in the spool is applied to it (the condition of an
// account that a reload added back is new). q.mu is held or not; it does
// not matter.
func (q *Queue) health(a *account) *health.Account {
	h := a.orphan
	if creds := q.opts.Accounts(a.name); creds != nil && creds.Health != nil {
		h = creds.Health
	}
	q.hmu.Lock()
	held := q.held[a.name]
	q.hmu.Unlock()
	if held {
		h.SetAdminHold(true)
	}
	return h
}

// add puts e in the queue and returns its account. q.mu is held or the
// queue is not shared yet.
func (q *Queue) add(e *Entry) *account {
	q.entries[e.ID] = e
	a := q.account(e.Account)
	a.entries[e.ID] = e
	return a
}

// remove takes e out of the queue. q.mu is held.
func (q *Queue) remove(e *Entry) {
	delete(q.entries, e.ID)
	if a := q.accounts[e.Account]; a != nil {
		delete(a.entries, e.ID)
	}
}

// release ends an account's hold: the account's SMTP or Graph condition is
// cleared (its mail is tried again, and held again if the condition
// persists), the time held is not counted in its messages' lifetimes, and
// its queued mail is due now.
func (q *Queue) release(name, why string) {
	q.mu.Lock()
	a := q.accounts[name]
	if a == nil {
		q.mu.Unlock()
		return
	}
	h := q.health(a)
	q.mu.Unlock()
	h.Succeed(health.SourceSMTP)
	h.Succeed(health.SourceGraph)
	q.checkHold(a, h, why)
	a.wake()
}

// resume credits the time a's hold lasted (frozen) to its queued messages,
// whose lifetimes do not count it, makes them due now and announces the
// release: once per hold. q.mu is held.
func (q *Queue) resume(a *account, frozen time.Duration) {
	now := q.opts.Now()
	for _, e := range a.entries {
		if e.State == StateQueued {
			e.Frozen += frozen
			e.NextAttempt = now
		}
	}
	q.event(EventReleased, "", a.name)
}

// holdAccount stops delivery for an account because of its condition e.
// Conditions found at the upstream SMTP server are reported to the
// account's health; token conditions were reported by the token source.
func (q *Queue) holdAccount(a *account, src health.Source, e *health.Error) {
	h := q.health(a)
	if src != "" {
		h.Fail(src, e)
	}
	q.mu.Lock()
	if e.State == health.StateDegraded {
		a.backoff = min(max(2*a.backoff, q.opts.RetryMin), q.opts.RetryMax)
		a.probeAt = q.opts.Now().Add(a.backoff)
	}
	q.mu.Unlock()
	q.checkHold(a, h, "")
}

// ErrNotFound is returned (wrapped, naming what) by admin operations for an
// unknown queue ID or account: test with errors.Is.
var ErrNotFound = errors.New("no such message in the queue")

func notFound(what string) error { return fmt.Errorf("%w: %s", ErrNotFound, what) }

// sortedEntries returns clones of the entries, oldest first. q.mu is held.
func (q *Queue) sortedEntries(filter func(*Entry) bool) []*Entry {
	var l []*Entry
	for _, e := range q.entries {
		if filter == nil || filter(e) {
			l = append(l, e.clone())
		}
	}
	sort.Slice(l, func(i, j int) bool { return l[i].ID < l[j].ID })
	return l
}
