package main

import (
	"context"
	"log/slog"
	"slices"
)

// lazyAttrs is a slog.Handler that keeps the attributes With adds as they
// are and hands them to the handler below with each record. slog's text
// and JSON handlers format them ahead instead, into a copy of the handler
// with their text: for every IMAP, POP3 and SMTP session (conn, remote,
// then account), about a quarter of a kilobyte that an idle session keeps
// for hours and rarely logs with.
type lazyAttrs struct {
	h     slog.Handler
	attrs []slog.Attr
}

func (l *lazyAttrs) Enabled(ctx context.Context, level slog.Level) bool {
	return l.h.Enabled(ctx, level)
}

// WithAttrs resolves the attributes' values now, as slog's handlers do
// (a LogValuer is asked once, at With); a value that refers to memory the
// caller changes later (a slice, a map) shows it as it is when a record
// is written.
func (l *lazyAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return l
	}
	all := slices.Concat(l.attrs, as)
	for i := len(l.attrs); i < len(all); i++ {
		all[i].Value = all[i].Value.Resolve()
	}
	return &lazyAttrs{h: l.h, attrs: all}
}

// WithGroup hands the attributes so far to the handler below: they
// belong outside the group.
func (l *lazyAttrs) WithGroup(name string) slog.Handler {
	h := l.h
	if len(l.attrs) > 0 {
		h = h.WithAttrs(l.attrs)
	}
	return &lazyAttrs{h: h.WithGroup(name)}
}

func (l *lazyAttrs) Handle(ctx context.Context, r slog.Record) error {
	if len(l.attrs) == 0 {
		return l.h.Handle(ctx, r)
	}
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(l.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(a)
		return true
	})
	return l.h.Handle(ctx, nr)
}
