// Package invoices is the original example job type: generate and email the invoices of every customer
// of one account manager, then send the account manager a summary. Step 1 loads the customers (generated
// deterministically from the input), each sub-job renders one invoice and "emails" it by writing it into
// an outbox folder, and step 3 writes the summary.
package invoices

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/jobmill/jobmill/app/jobtype"
)

// Name is the type's name on submit.
const Name = "invoices"

// Input of an invoices job.
type Input struct {
	AccountManager string `json:"account_manager"`
	// Customers is how many customers the account manager has (the demo's stand-in for a CRM query).
	Customers int64 `json:"customers"`
	// Period is the billing period printed on invoices, e.g. "2026-11".
	Period string `json:"period"`
}

// customer is one sub-job's input.
type customer struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
	// AmountCents is what the customer owes.
	AmountCents int64  `json:"amount_cents"`
	Period      string `json:"period"`
	Manager     string `json:"manager"`
}

// result of one sub-job.
type result struct {
	Customer    string `json:"customer"`
	AmountCents int64  `json:"amount_cents"`
	File        string `json:"file"`
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func parseInput(raw []byte) (Input, error) {
	var in Input
	if err := json.Unmarshal(raw, &in); err != nil {
		return in, fmt.Errorf("invoices input: %w", err)
	}
	if !safeName.MatchString(in.AccountManager) {
		return in, fmt.Errorf("invoices input: account_manager must be 1–64 letters, digits, '.', '_' or '-' (got %q)", in.AccountManager)
	}
	if in.Customers < 0 {
		return in, errors.New("invoices input: customers must not be negative")
	}
	if in.Period == "" {
		in.Period = time.Now().UTC().Format("2006-01")
	}
	if !safeName.MatchString(in.Period) {
		return in, fmt.Errorf("invoices input: period %q is not a plain name", in.Period)
	}
	return in, nil
}

// Definition returns the invoices job type writing its emails under outboxDir/<job id>/.
func Definition(outboxDir string) jobtype.Definition {
	return jobtype.Definition{
		Name:        Name,
		Description: "generate and email the invoices of every customer of one account manager",
		Step1: func(ctx context.Context, _ jobtype.StepContext, raw []byte) ([]byte, error) {
			in, err := parseInput(raw)
			if err != nil {
				return nil, err
			}
			return json.Marshal(in) // normalised (period filled in) so that every split agrees
		},
		Split: func(ctx context.Context, _ jobtype.StepContext, out []byte, emit func([]byte) error) error {
			in, err := parseInput(out)
			if err != nil {
				return err
			}
			for i := int64(0); i < in.Customers; i++ {
				b, err := json.Marshal(customerOf(in, i))
				if err != nil {
					return err
				}
				if err := emit(b); err != nil {
					return err
				}
			}
			return nil
		},
		SubJob: func(ctx context.Context, sc jobtype.SubJobContext, raw []byte) ([]byte, error) {
			var c customer
			if err := json.Unmarshal(raw, &c); err != nil {
				return nil, fmt.Errorf("customer: %w", err)
			}
			file := filepath.Join(outboxDir, sc.JobID, "invoice-"+c.ID+".eml")
			if err := writeOnce(file, renderInvoice(c, sc)); err != nil {
				return nil, err
			}
			return json.Marshal(result{Customer: c.ID, AmountCents: c.AmountCents, File: file})
		},
		Step3: func(ctx context.Context, sc jobtype.StepContext, s jobtype.Summary) ([]byte, error) {
			in, err := parseInput(s.Input)
			if err != nil {
				return nil, err
			}
			var total int64
			var count int64
			err = s.Results(func(_ int64, raw []byte) error {
				var r result
				if err := json.Unmarshal(raw, &r); err != nil {
					return err
				}
				total += r.AmountCents
				count++
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("read invoice results: %w", err)
			}
			var b bytes.Buffer
			fmt.Fprintf(&b, "To: %s@example.com\nSubject: Invoices for %s, period %s\nIdempotency-Key: %s\n\n", in.AccountManager, in.AccountManager, in.Period, sc.IdempotencyKey)
			fmt.Fprintf(&b, "Customers:      %d\nInvoices sent:  %d\nFailed:         %d\nTotal invoiced: %s\n", s.Total, count, s.Failed, money(total))
			removeStaleTemps(filepath.Join(outboxDir, sc.JobID))
			file := filepath.Join(outboxDir, sc.JobID, "summary-"+in.AccountManager+".eml")
			if err := writeOnce(file, b.Bytes()); err != nil {
				return nil, err
			}
			return json.Marshal(map[string]any{"invoices": count, "failed": s.Failed, "total_cents": total, "summary_file": file})
		},
		Policy: jobtype.Policy{SubJobTimeout: time.Minute, MaxAttempts: 3},
	}
}

func customerOf(in Input, i int64) customer {
	id := fmt.Sprintf("%s-c%06d", in.AccountManager, i+1)
	h := fnv.New64a()
	_, _ = h.Write([]byte(id + "/" + in.Period))
	return customer{
		ID:          id,
		Name:        fmt.Sprintf("Customer %d of %s", i+1, in.AccountManager),
		Email:       fmt.Sprintf("billing+%s@example.com", id),
		AmountCents: 1000 + int64(h.Sum64()%99000),
		Period:      in.Period,
		Manager:     in.AccountManager,
	}
}

func renderInvoice(c customer, sc jobtype.SubJobContext) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "To: %s <%s>\nSubject: Invoice %s for %s\nIdempotency-Key: %s\n\n", c.Name, c.Email, c.ID, c.Period, sc.IdempotencyKey)
	fmt.Fprintf(&b, "Dear %s,\n\nyour invoice for %s is %s.\n\nYour account manager, %s\n", c.Name, c.Period, money(c.AmountCents), c.Manager)
	return b.Bytes()
}

func money(cents int64) string { return fmt.Sprintf("EUR %d.%02d", cents/100, cents%100) }

// removeStaleTemps deletes temporary files that a worker killed in the middle of writeOnce left behind.
// Step 3 runs after every sub-job has its final outcome, so no write of this job is still in progress.
func removeStaleTemps(dir string) {
	temps, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	for _, t := range temps {
		_ = os.Remove(t)
	}
}

// writeOnce writes the file under its final name atomically, so a retry or a redelivered sub-job leaves
// exactly one complete file: the name is derived from the idempotent unit of work, and a file that
// exists was written whole.
func writeOnce(path string, content []byte) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
