// Rendering and parsing the passwd-file format: one "login:hash" line per
// entry, sorted by login.

package passwdfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/smtpcreds/smtpcreds/internal/syncer"
)

// render returns the content of entries, by splicing the previous render
// when keep and there is one; with keep it remembers the render for the
// next one (or, for a file too large to splice, keeps only its buffer, for
// the next whole render to reuse).
func (st *fileState) render(entries []syncer.Entry, keep bool) ([]byte, error) {
	if !keep {
		return appendRender(nil, entries)
	}
	data, ok := spliceRender(st.spare[:0], st.buf, st.prev, entries)
	if !ok {
		dst := st.buf[:0] // no splice source to keep: render over the last render
		if st.prev != nil {
			dst = st.spare[:0]
		}
		var err error
		if data, err = appendRender(dst, entries); err != nil {
			return nil, err
		}
	}
	switch {
	case len(data) > spliceMax || !ok && !slices.IsSortedFunc(entries, byLogin):
		// Too large to keep twice, or rendered from a sorted copy (prev
		// must be in file order): one buffer, and no splice next time.
		st.buf, st.prev, st.spare = data, nil, nil
		return data, nil
	case st.prev != nil: // data is in spare's array
		st.buf, st.spare = data, st.buf
	default: // data is in buf's array
		st.buf = data
	}
	st.prev = append(st.prev[:0], entries...)
	return data, nil
}

// spliceRender appends to dst what Render returns for next, given that old
// is Render's content for prev: runs of entries next shares with prev are
// copied from old, and only the other lines are rendered and checked. It
// reports false, having checked nothing in full, when it cannot tell (no
// prev, or next is not strictly sorted, or an entry of next that prev does
// not have is invalid): the caller then renders next whole, which reports
// the error.
func spliceRender(dst, old []byte, prev, next []syncer.Entry) ([]byte, bool) {
	if prev == nil {
		return nil, false
	}
	n := 0 // the content's size, so that dst grows once
	for _, e := range next {
		n += len(e.Login) + len(e.Hash) + 2
	}
	dst = alignedGrow(dst, n)
	off, run := 0, 0 // old's offset of prev[i], and of the run not yet copied
	i := 0
	fromPrev := false // next[j-1] is an entry of prev (one before prev[i])
	for j, e := range next {
		for i < len(prev) && prev[i].Login < e.Login { // gone
			dst = append(dst, old[run:off]...)
			off += len(prev[i].Login) + len(prev[i].Hash) + 2
			run = off
			i++
		}
		same := i < len(prev) && prev[i] == e
		// Two entries of prev in a row are in order already (prev is
		// strictly sorted); any other pair is compared.
		if !(same && fromPrev) && j > 0 && next[j-1].Login >= e.Login {
			return nil, false
		}
		fromPrev = same
		if same { // unchanged: part of the run
			off += len(e.Login) + len(e.Hash) + 2
			i++
			continue
		}
		if i < len(prev) && prev[i].Login == e.Login { // new hash: the old line goes
			dst = append(dst, old[run:off]...)
			off += len(prev[i].Login) + len(prev[i].Hash) + 2
			run = off
			i++
		}
		if checkField(e.Login) != nil || checkField(e.Hash) != nil {
			return nil, false
		}
		dst = append(dst, old[run:off]...)
		run = off
		dst = append(dst, e.Login...)
		dst = append(dst, ':')
		dst = append(dst, e.Hash...)
		dst = append(dst, '\n')
	}
	return append(dst, old[run:off]...), true
}

func byLogin(a, b syncer.Entry) int { return strings.Compare(a.Login, b.Login) }

// Render returns the passwd-file content of entries: sorted by login, one
// "login:hash\n" line each; no entries render as empty content. entries is
// not modified.
//
// It returns an error wrapping ErrInvalidEntry (naming the login, never the
// hash) if a login or hash is empty, starts with '#', or contains ':' or an
// ASCII control character (among them '\n', '\r' and NUL), or if two entries
// have the same login, so that every line reads back as exactly the entry it
// was made from.
func Render(entries []syncer.Entry) ([]byte, error) { return appendRender(nil, entries) }

// appendRender is Render appending to buf.
func appendRender(buf []byte, entries []syncer.Entry) ([]byte, error) {
	sorted := entries
	if !slices.IsSortedFunc(entries, byLogin) {
		sorted = slices.Clone(entries)
		slices.SortFunc(sorted, byLogin)
	}
	n := 0
	for i, e := range sorted {
		if e.Login == "" || e.Hash == "" || e.Login[0] == '#' || e.Hash[0] == '#' ||
			i > 0 && sorted[i-1].Login == e.Login {
			return nil, invalid(sorted)
		}
		n += len(e.Login) + len(e.Hash) + 2
	}
	buf = alignedGrow(buf, n)
	start := len(buf)
	for _, e := range sorted {
		buf = append(buf, e.Login...)
		buf = append(buf, ':')
		buf = append(buf, e.Hash...)
		buf = append(buf, '\n')
	}
	// Each line got exactly one ':' and one '\n': if the whole content has
	// no more of them and no other control character, no field has any.
	out := buf[start:]
	if bytes.Count(out, []byte{':'}) != len(sorted) || bytes.IndexByte(out, 0x7f) >= 0 || !onlyNewlines(out, len(sorted)) {
		return nil, invalid(sorted)
	}
	return buf, nil
}

// invalid names the first invalid entry of sorted (checked one by one,
// only once the fast checks of Render failed).
func invalid(sorted []syncer.Entry) error {
	for i, e := range sorted {
		if err := checkField(e.Login); err != nil {
			return fmt.Errorf("%w: login %q: %v", ErrInvalidEntry, e.Login, err)
		}
		if err := checkField(e.Hash); err != nil {
			return fmt.Errorf("%w: hash of login %q: %v", ErrInvalidEntry, e.Login, err)
		}
		if i > 0 && sorted[i-1].Login == e.Login {
			return fmt.Errorf("%w: login %q appears more than once", ErrInvalidEntry, e.Login)
		}
	}
	return fmt.Errorf("%w", ErrInvalidEntry) // not reached: Render's checks mirror these
}

// onlyNewlines reports whether the control characters (< 0x20) of b are
// exactly lines newlines. Eight bytes at a time: a word without a byte
// below 0x20 is skipped whole.
func onlyNewlines(b []byte, lines int) bool {
	const highs, spaces = 0x8080808080808080, 0x2020202020202020
	newlines := 0
	i := 0
	for ; i+8 <= len(b); i += 8 {
		v := binary.LittleEndian.Uint64(b[i:])
		if (v-spaces)&^v&highs == 0 { // no byte below 0x20 (bytes >= 0x80 never flag)
			continue
		}
		for _, c := range b[i : i+8] {
			if c < 0x20 {
				if c != '\n' {
					return false
				}
				newlines++
			}
		}
	}
	for _, c := range b[i:] {
		if c < 0x20 {
			if c != '\n' {
				return false
			}
			newlines++
		}
	}
	return newlines == lines
}

func checkField(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if s[0] == '#' {
		return errors.New("starts with '#'")
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ':':
			return errors.New("contains ':'")
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("contains control character %q", c)
		}
	}
	return nil
}

// Parse is the inverse of Render, also for a file that a Writer appended
// lines to: it returns the entries of data sorted by login. It is strict,
// for consistency checks: it returns an error wrapping ErrMalformed if data
// is not exactly what Render produces for some entries, but for the order
// of the lines (a missing final newline, which a truncated file would show,
// a line without exactly one ':', a blank or comment line, an invalid
// field, a login that appears twice). Empty data yields no entries.
func Parse(data []byte) ([]syncer.Entry, error) {
	if len(data) == 0 {
		return nil, nil
	}
	if data[len(data)-1] != '\n' {
		return nil, fmt.Errorf("%w: no newline at the end", ErrMalformed)
	}
	var entries []syncer.Entry
	lineNo := 0
	sorted := true
	for line := range bytes.SplitSeq(data[:len(data)-1], []byte{'\n'}) {
		lineNo++
		login, hash, ok := strings.Cut(string(line), ":")
		if !ok {
			return nil, fmt.Errorf("%w: line %d has no ':'", ErrMalformed, lineNo)
		}
		if err := checkField(login); err != nil {
			return nil, fmt.Errorf("%w: line %d: login %v", ErrMalformed, lineNo, err)
		}
		if err := checkField(hash); err != nil {
			return nil, fmt.Errorf("%w: line %d: hash %v", ErrMalformed, lineNo, err)
		}
		if n := len(entries); n > 0 && entries[n-1].Login >= login {
			if entries[n-1].Login == login {
				return nil, fmt.Errorf("%w: line %d: login %q repeated", ErrMalformed, lineNo, login)
			}
			sorted = false
		}
		entries = append(entries, syncer.Entry{Login: login, Hash: hash})
	}
	if !sorted {
		slices.SortFunc(entries, byLogin)
		for i := 1; i < len(entries); i++ {
			if entries[i-1].Login == entries[i].Login {
				return nil, fmt.Errorf("%w: login %q appears more than once", ErrMalformed, entries[i].Login)
			}
		}
	}
	return entries, nil
}
