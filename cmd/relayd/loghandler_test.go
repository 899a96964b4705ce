package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"testing/slogtest"
)

// A logger through lazyAttrs writes exactly what slog's own handlers
// write, With and WithGroup in any order.
func TestLazyAttrsWritesTheSame(t *testing.T) {
	noTime := &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	use := func(l *slog.Logger) {
		l.Info("plain", "k", 1)
		s := l.With("conn", "imap-7", "remote", "127.0.0.1:4000")
		s.Debug("session", "n", 2)
		a := s.With("account", "support")
		a.Warn("login refused", "reason", "needs_reauth", slog.Group("g", "x", 1))
		a.WithGroup("upstream").With("server", "outlook.office365.com").Error("dial", "err", "refused")
		l.WithGroup("empty").Info("no attrs")
		l.With().Info("with nothing")
		v := &changing{"at With"}
		w := l.With("v", v)
		v.s = "later"
		w.Info("a LogValuer is asked at With")
	}
	for _, format := range []string{"text", "json"} {
		var direct, lazy bytes.Buffer
		mk := func(w *bytes.Buffer) slog.Handler {
			if format == "json" {
				return slog.NewJSONHandler(w, noTime)
			}
			return slog.NewTextHandler(w, noTime)
		}
		use(slog.New(mk(&direct)))
		use(slog.New(&lazyAttrs{h: mk(&lazy)}))
		if direct.String() != lazy.String() || direct.Len() == 0 {
			t.Errorf("%s: through lazyAttrs\n%s\nwant\n%s", format, lazy.String(), direct.String())
		}
	}
}

// changing is a LogValuer whose value changes after With.
type changing struct{ s string }

func (c *changing) LogValue() slog.Value { return slog.StringValue(c.s) }

// lazyAttrs keeps slog's handler contract (testing/slogtest).
func TestLazyAttrsSlogtest(t *testing.T) {
	var buf bytes.Buffer
	h := &lazyAttrs{h: slog.NewJSONHandler(&buf, nil)}
	results := func() []map[string]any {
		var ms []map[string]any
		for _, line := range bytes.Split(buf.Bytes(), []byte{'\n'}) {
			if len(line) == 0 {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatal(err)
			}
			ms = append(ms, m)
		}
		return ms
	}
	if err := slogtest.TestHandler(h, results); err != nil {
		t.Error(err)
	}
}
