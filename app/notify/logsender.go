package notify

import (
	"context"
	"errors"
	"log/slog"
)

// LogSender writes each delivery to a logger at info level, for local use without a receiver. With a next
// sender it also sends the delivery there and returns what that returns; without one, every delivery
// succeeds once logged. It never logs the webhook's URL or secret.
type LogSender struct {
	logger *slog.Logger
	next   Sender
}

// NewLogSender needs a logger; next may be nil.
func NewLogSender(logger *slog.Logger, next Sender) (*LogSender, error) {
	if logger == nil {
		return nil, errors.New("notify log sender: logger is required")
	}
	return &LogSender{logger: logger, next: next}, nil
}

// Send implements Sender.
func (s *LogSender) Send(ctx context.Context, t Target, d Delivery) (int, error) {
	attrs := []any{"type", string(d.Type), "job", d.JobID, "tenant", d.Tenant, "at", d.At,
		"delivery", d.ID, "webhook", d.WebhookID, "attempt", d.Attempts, "data", string(d.Data)}
	if d.Step != 0 {
		attrs = append(attrs, "step", d.Step)
	}
	s.logger.InfoContext(ctx, "notification", attrs...)
	if s.next == nil {
		return 0, nil
	}
	return s.next.Send(ctx, t, d)
}
