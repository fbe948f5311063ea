package milter

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/netip"
	"strings"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/smtpcreds/smtpcreds/internal/postgres"
	"github.com/smtpcreds/smtpcreds/internal/relay"
)

// Bounds on what one message may make the milter hold. Postfix's own
// defaults are below them (header_size_limit 102400 per header,
// message_size_limit 10240000); past them the message is refused, never
// passed on unchecked.
const (
	maxHeaderBytes = 1 << 20
	maxRecipients  = 1000
)

// session is one milter connection: one SMTP session of Postfix's.
type session struct {
	gomilter.NoOpMilter
	m        *Milter
	start    time.Time // when the SMTP session began
	clientIP string

	// The message in progress; reset by MailFrom and Abort.
	login      *login // nil: not authenticated, or refused
	sender     string
	recipients []string
	headers    []field
	hdrBytes   int
	from       string
	subject    *string
	sign       *signing
	size       int64
	verdict    *gomilter.Response // a refusal decided before the end of the message
}

type field struct{ name, value string }

func (s *session) reset() {
	if s.sign != nil {
		s.sign.abort()
	}
	s.login, s.sender, s.recipients, s.headers, s.hdrBytes = nil, "", nil, nil, 0
	s.from, s.subject, s.sign, s.size, s.verdict = "", nil, nil, 0, nil
}

func (s *session) Connect(_, family string, _ uint16, addr string, _ gomilter.Modifier) (*gomilter.Response, error) {
	s.start = s.m.now()
	if family == "tcp4" || family == "tcp6" {
		if ip, err := netip.ParseAddr(strings.TrimPrefix(addr, "IPv6:")); err == nil {
			s.clientIP = ip.String()
		}
	}
	return gomilter.RespContinue, nil
}

func (s *session) MailFrom(from, _ string, m gomilter.Modifier) (*gomilter.Response, error) {
	s.reset()
	if s.start.IsZero() { // Postfix always sends connect first; be safe
		s.start = s.m.now()
	}
	name := m.Get(gomilter.MacroAuthAuthen)
	if name == "" {
		// Not authenticated: not ours to judge. Accept ends this message's
		// callbacks.
		return gomilter.RespAccept, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.m.cfg.Timeout)
	defer cancel()
	l, err := s.m.login(ctx, name)
	switch {
	case errors.Is(err, errUnknownLogin):
		return s.m.refuse(ctx, nil, s.message(from), fmt.Sprintf("login %s is not an SMTP credential of this relay", name), 550, "5.7.1")
	case err != nil:
		return s.m.fail("look up the login", err)
	}
	s.sender = strings.ToLower(from)
	switch {
	case !l.Active:
		return s.m.refuse(ctx, &l, s.message(from), fmt.Sprintf("login %s is disabled", l.Name), 550, "5.7.1")
	case !l.ExpiresAt.IsZero() && !l.ExpiresAt.After(s.m.now()):
		return s.m.refuse(ctx, &l, s.message(from), fmt.Sprintf("login %s expired", l.Name), 550, "5.7.1")
	case !l.DomainVerified || !l.DomainActive:
		return s.m.refuse(ctx, &l, s.message(from), fmt.Sprintf("the domain of login %s is not verified or is disabled", l.Name), 550, "5.7.1")
	case !l.PasswordChangedAt.IsZero() && l.PasswordChangedAt.After(s.start) && !l.PreviousExpiresAt.After(s.m.now()):
		// (During a reset's grace period the replaced password still
		// authenticates, so a session that used it may go on.)
		return s.m.refuse(ctx, &l, s.message(from), fmt.Sprintf("the password of login %s changed after this session began; connect and authenticate again", l.Name), 451, "4.7.0")
	case from == "":
		return s.m.refuse(ctx, &l, s.message(from), "sender <> refused: authenticated mail needs a sender address", 550, "5.7.1")
	}
	if err := s.m.checkSender(ctx, l, from); err != nil {
		return s.m.refusal(ctx, &l, s.message(from), err)
	}
	s.login = &l
	return gomilter.RespContinue, nil
}

func (s *session) RcptTo(rcpt, _ string, _ gomilter.Modifier) (*gomilter.Response, error) {
	if s.login != nil && len(s.recipients) < maxRecipients {
		s.recipients = append(s.recipients, strings.ToLower(rcpt))
	}
	return gomilter.RespContinue, nil
}

func (s *session) Header(name, value string, _ gomilter.Modifier) (*gomilter.Response, error) {
	if s.login == nil {
		return gomilter.RespContinue, nil
	}
	s.hdrBytes += len(name) + len(value) + 3
	if s.hdrBytes <= maxHeaderBytes {
		s.headers = append(s.headers, field{name, value})
	}
	return gomilter.RespContinue, nil
}

// Headers checks the From: field and starts the signatures: the body is
// then hashed as it streams, never held. Postfix is not waiting for an
// answer here (no reply at end of headers saves a round trip per
// message): a refusal is given at the end of the message.
func (s *session) Headers(m gomilter.Modifier) (*gomilter.Response, error) {
	resp, err := s.checkHeaders(m)
	if err != nil {
		return nil, err
	}
	if resp != gomilter.RespContinue {
		s.verdict = resp
	}
	return gomilter.RespContinue, nil
}

func (s *session) checkHeaders(gomilter.Modifier) (*gomilter.Response, error) {
	if s.login == nil {
		return gomilter.RespContinue, nil
	}
	l := *s.login
	ctx, cancel := context.WithTimeout(context.Background(), s.m.cfg.Timeout)
	defer cancel()
	if s.hdrBytes > maxHeaderBytes {
		s.login = nil
		return s.m.refuse(ctx, &l, s.message(s.sender), fmt.Sprintf("the header is larger than %d bytes", maxHeaderBytes), 552, "5.3.4")
	}
	var froms []string
	for _, f := range s.headers {
		switch {
		case strings.EqualFold(f.name, "From"):
			froms = append(froms, f.value)
		case strings.EqualFold(f.name, "Subject") && s.m.cfg.LogSubjects:
			subj := decodeHeader(f.value)
			s.subject = &subj
		}
	}
	if len(froms) > 0 {
		s.from = strings.TrimSpace(unfold(froms[0]))
	}
	addrs, err := relay.FromAddresses(unfoldAll(froms))
	if err != nil {
		s.login = nil
		return s.m.refuse(ctx, &l, s.message(s.sender), err.Error(), 550, "5.7.1")
	}
	var signFor *domain
	for _, a := range addrs {
		if err := s.m.checkSender(ctx, l, a); err != nil {
			s.login = nil
			return s.m.refusal(ctx, &l, s.message(s.sender), err)
		}
		if signFor == nil {
			_, dn, _ := relay.SplitAddress(a)
			d, err := s.m.domain(ctx, dn)
			if err != nil {
				s.login = nil
				return s.m.fail("look up the From: domain", err)
			}
			signFor = &d
		}
	}
	if signFor != nil && signFor.Key == nil {
		// Its key did not unseal (logged when it was read): the message
		// would leave unsigned. The client retries once it is fixed.
		s.login = nil
		return s.m.fail("sign", fmt.Errorf("no usable DKIM key for %s", signFor.Name))
	}
	s.sign, err = startSigning(signFor, s.headers)
	if err != nil {
		s.login = nil
		return s.m.fail("start signing", err)
	}
	return gomilter.RespContinue, nil
}

func (s *session) BodyChunk(chunk []byte, _ gomilter.Modifier) (*gomilter.Response, error) {
	if s.login == nil {
		return gomilter.RespContinue, nil
	}
	s.size += int64(len(chunk))
	if s.sign != nil {
		if err := s.sign.write(chunk); err != nil {
			s.login = nil
			return s.m.fail("sign", err)
		}
	}
	return gomilter.RespContinue, nil
}

// EndOfMessage counts the message against its limits and logs it, in one
// round trip, then adds its signatures.
func (s *session) EndOfMessage(m gomilter.Modifier) (*gomilter.Response, error) {
	if v := s.verdict; v != nil {
		s.reset()
		return v, nil
	}
	if s.login == nil {
		// Refused earlier (Postfix does not get here then) or not ours.
		return gomilter.RespAccept, nil
	}
	l := *s.login
	defer s.reset()
	ctx, cancel := context.WithTimeout(context.Background(), s.m.cfg.Timeout)
	defer cancel()
	msg := s.message(s.sender)
	msg.AccountID, msg.DomainID, msg.CredentialID, msg.Login = l.AccountID, l.DomainID, l.CredentialID, l.Name
	msg.QueueID = m.Get(gomilter.MacroQueueId)
	msg.Size = int64(s.hdrBytes) + 2 + s.size
	var sigs []string
	if s.sign != nil {
		var err error
		if sigs, err = s.sign.finish(); err != nil {
			s.sign = nil
			return s.m.fail("sign", err)
		}
		s.sign = nil
	}
	msg.DKIMSigned = len(sigs) > 0
	msg.Event = "queued"
	msg = cleanMessage(msg)
	count := s.m.count(l)
	over, err := postgres.RelayRepo{}.Record(ctx, s.m.db, msg, count)
	if err != nil {
		return s.m.fail("count and log the message", err)
	}
	if over > 0 {
		s.m.metric("temporary_fail")
		return reply(451, "4.7.1", count.Reasons[over-1])
	}
	// Each signature goes on top, so the last one added is the first
	// field: the From: domain's, then the auth domain's.
	for i := len(sigs) - 1; i >= 0; i-- {
		if err := m.InsertHeader(0, "DKIM-Signature", sigs[i]); err != nil {
			return s.m.fail("add the signature", err)
		}
	}
	s.m.metric("queued")
	return gomilter.RespAccept, nil
}

func (s *session) Abort(gomilter.Modifier) error {
	s.reset()
	return nil
}

func (s *session) Cleanup(gomilter.Modifier) { s.reset() }

// message is what the log keeps of the message so far.
func (s *session) message(sender string) postgres.Message {
	return postgres.Message{
		ClientIP:   s.clientIP,
		Sender:     strings.ToLower(sender),
		Recipients: append([]string{}, s.recipients...),
		From:       s.from,
		Subject:    s.subject,
		Size:       int64(s.hdrBytes) + s.size,
	}
}

// cleanMessage cleans msg's texts (see clean): what the client sent may
// be any bytes.
func cleanMessage(msg postgres.Message) postgres.Message {
	msg.Sender, msg.From = clean(msg.Sender), clean(msg.From)
	for i, r := range msg.Recipients {
		msg.Recipients[i] = clean(r)
	}
	if msg.Subject != nil {
		subj := clean(*msg.Subject)
		msg.Subject = &subj
	}
	return msg
}

// clean makes s storable text: valid UTF-8 without NULs.
func clean(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// checkSender applies the sender policy to addr.
func (m *Milter) checkSender(ctx context.Context, l login, addr string) error {
	_, dn, ok := relay.SplitAddress(addr)
	if !ok {
		return m.cfg.Policy.Check(l.Login, addr, nil)
	}
	d, err := m.domain(ctx, dn)
	if err != nil {
		return err
	}
	if !d.found {
		return m.cfg.Policy.Check(l.Login, addr, nil)
	}
	return m.cfg.Policy.Check(l.Login, addr, &d.Domain)
}

// refusal answers err: a *relay.Refusal is a 5.7.1 refusal, anything else a
// failure to decide.
func (m *Milter) refusal(ctx context.Context, l *login, msg postgres.Message, err error) (*gomilter.Response, error) {
	var r *relay.Refusal
	if errors.As(err, &r) {
		return m.refuse(ctx, l, msg, r.Error(), 550, "5.7.1")
	}
	return m.fail("look up the sender's domain", err)
}

// refuse logs msg as refused (when the login is known) and answers the
// client code and text.
func (m *Milter) refuse(ctx context.Context, l *login, msg postgres.Message, why string, code uint16, status string) (*gomilter.Response, error) {
	event := "permanent_fail"
	if code < 500 {
		event = "temporary_fail"
	}
	m.metric(event)
	if l != nil {
		msg = cleanMessage(msg)
		msg.AccountID, msg.DomainID, msg.CredentialID, msg.Login = l.AccountID, l.DomainID, l.CredentialID, l.Name
		msg.Event, msg.Reason = event, why
		if _, err := (postgres.RelayRepo{}).Record(ctx, m.db, msg, postgres.Count{}); err != nil {
			m.log.Warn("milter: log a refused message", "login", l.Name, "error", err.Error())
		}
	}
	return reply(code, status, why)
}

// fail answers a failure to decide: a temporary failure, so the client
// retries and nothing passes unchecked.
func (m *Milter) fail(what string, err error) (*gomilter.Response, error) {
	m.log.Error("milter: "+what, "error", err.Error())
	m.metric("temporary_fail")
	return reply(451, "4.3.0", "temporary failure checking this message; try again later")
}

func reply(code uint16, status, text string) (*gomilter.Response, error) {
	text = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, text)
	return gomilter.RejectWithCodeAndReason(code, status+" "+text)
}

// count names the counters a message of l is counted against, in key
// order, with the reason each gives when full.
func (m *Milter) count(l login) postgres.Count {
	now := m.now()
	var c postgres.Count
	add := func(key string, u relay.Unit, limit int, who string) {
		c.Keys = append(c.Keys, key)
		c.Windows = append(c.Windows, u.Start(now))
		c.Limits = append(c.Limits, int64(limit))
		c.Reasons = append(c.Reasons, fmt.Sprintf("%s sending limit of %d messages %s reached; it resets at %s",
			who, limit, u, u.End(now).Format("2006-01-02 15:04:05 UTC")))
	}
	// A window without a limit is not counted (fewer rows to lock), but
	// for the account's day: GET /api/quota reports it.
	for _, u := range relay.Units {
		if lim := m.cfg.Account.Of(u); lim > 0 || u == relay.Day {
			add(relay.AccountKey(l.AccountID, u), u, lim, "the account's")
		}
	}
	for _, u := range relay.Units {
		if lim := l.Limits.Of(u); lim > 0 {
			add(relay.CredentialKey(l.CredentialID, u), u, lim, "login "+l.Name+"'s")
		}
	}
	return c
}

// unfold joins a folded header value's lines.
func unfold(v string) string {
	return strings.NewReplacer("\r\n", "", "\n", "").Replace(v)
}

func unfoldAll(vs []string) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = unfold(v)
	}
	return out
}

func decodeHeader(v string) string {
	d := mime.WordDecoder{}
	if s, err := d.DecodeHeader(strings.TrimSpace(unfold(v))); err == nil {
		return s
	}
	return strings.TrimSpace(unfold(v))
}
