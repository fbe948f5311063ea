package postfixtest

import (
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// Message is one message the sink received from Postfix.
type Message struct {
	From string   // envelope sender, without <>
	To   []string // envelope recipients, without <>
	Data string   // header and body, with "\r\n" line ends, without the final "."
}

// sink is a minimal SMTP server on 127.0.0.1 to which the instance relays
// every message it accepts: it takes any message and keeps it.
type sink struct {
	ln   net.Listener
	port int
	wg   sync.WaitGroup

	mu      sync.Mutex
	msgs    []Message
	changed chan struct{} // closed and replaced at each new message
}

func startSink() (*sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	k := &sink{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, changed: make(chan struct{})}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			k.wg.Add(1)
			go func() {
				defer k.wg.Done()
				defer conn.Close()
				k.serve(conn)
			}()
		}
	}()
	return k, nil
}

func (k *sink) close() {
	_ = k.ln.Close()
	k.wg.Wait()
}

// serve speaks the server side of SMTP, enough for Postfix's smtp client.
func (k *sink) serve(conn net.Conn) {
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	tp := textproto.NewConn(conn)
	reply := func(format string, args ...any) bool { return tp.PrintfLine(format, args...) == nil }
	if !reply("220 postfixtest-sink ESMTP") {
		return
	}
	var msg Message
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO":
			msg = Message{}
			if !reply("250 postfixtest-sink") {
				return
			}
		case "MAIL":
			msg = Message{From: addrArg(arg, "FROM:")}
			if !reply("250 2.1.0 ok") {
				return
			}
		case "RCPT":
			msg.To = append(msg.To, addrArg(arg, "TO:"))
			if !reply("250 2.1.5 ok") {
				return
			}
		case "DATA":
			if !reply("354 go ahead") {
				return
			}
			data, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			msg.Data = strings.ReplaceAll(string(data), "\n", "\r\n")
			k.add(msg)
			msg = Message{}
			if !reply("250 2.0.0 kept") {
				return
			}
		case "RSET", "NOOP":
			if strings.EqualFold(verb, "RSET") {
				msg = Message{}
			}
			if !reply("250 2.0.0 ok") {
				return
			}
		case "QUIT":
			reply("221 2.0.0 bye")
			return
		default:
			if !reply("502 5.5.2 not here") {
				return
			}
		}
	}
}

// addrArg returns the address of "FROM:<a> PARAMS" without its brackets.
func addrArg(arg, prefix string) string {
	arg = strings.TrimSpace(arg)
	if len(arg) >= len(prefix) && strings.EqualFold(arg[:len(prefix)], prefix) {
		arg = strings.TrimSpace(arg[len(prefix):])
	}
	if i := strings.IndexByte(arg, '>'); strings.HasPrefix(arg, "<") && i > 0 {
		return arg[1:i]
	}
	f, _, _ := strings.Cut(arg, " ")
	return f
}

func (k *sink) add(m Message) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.msgs = append(k.msgs, m)
	close(k.changed)
	k.changed = make(chan struct{})
}

// Messages returns every message Postfix has relayed to the sink so far.
func (s *Server) Messages() []Message {
	s.sink.mu.Lock()
	defer s.sink.mu.Unlock()
	return append([]Message(nil), s.sink.msgs...)
}

// WaitMessage returns the first message for which match returns true, as
// soon as Postfix has relayed it to the sink. It fails the test if none
// arrives within timeout; the message then includes Postfix's log (and
// the queue is not flushed: a message Postfix deferred stays deferred).
func (s *Server) WaitMessage(tb testing.TB, timeout time.Duration, match func(Message) bool) Message {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.sink.mu.Lock()
		for _, m := range s.sink.msgs {
			if match(m) {
				s.sink.mu.Unlock()
				return m
			}
		}
		changed := s.sink.changed
		s.sink.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("postfixtest: no matching message reached the sink within %v (%d others did)\n--- postfix log ---\n%s",
				timeout, len(s.Messages()), s.Log())
			return Message{}
		}
	}
}

// String shows a message's envelope, for test failures.
func (m Message) String() string {
	return fmt.Sprintf("from <%s> to %v, %d bytes", m.From, m.To, len(m.Data))
}
