package service

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
)

// Watermill's chatter is dropped below the configured level, also through With, and still reaches the
// log when the level asks for it; errors always do.
func TestWatermillLoggerLevels(t *testing.T) {
	for _, tc := range []struct {
		level slog.Level
		want  []string
		not   []string
	}{
		{slog.LevelInfo, []string{"an error"}, []string{"an info", "a debug", "a trace"}},
		{slog.LevelDebug, []string{"an error", "an info", "a debug"}, []string{"a trace"}},
		{watermill.LevelTrace, []string{"an error", "an info", "a debug", "a trace"}, nil},
	} {
		var buf bytes.Buffer
		l := watermillLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level}))).
			With(watermill.LogFields{"handler": "manager"})
		l.Error("an error", errors.New("boom"), nil)
		l.Info("an info", nil)
		l.Debug("a debug", nil)
		l.Trace("a trace", watermill.LogFields{"k": "v"})
		out := buf.String()
		for _, w := range tc.want {
			if !strings.Contains(out, w) || !strings.Contains(out, "handler=manager") {
				t.Errorf("level %v: %q missing from %q", tc.level, w, out)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(out, n) {
				t.Errorf("level %v: %q logged: %q", tc.level, n, out)
			}
		}
	}
}
