// Package jobtype is the SDK for defining job types: step 1, how its output splits into sub-jobs, the
// sub-job function, step 3, and the policy for failures and time.
//
// # Delivery contract
//
// Workers receive their work at least once. A worker killed in the middle of a sub-job means that the
// sub-job runs again, possibly on another worker, and a slow attempt that timed out may still finish after
// its retry started. The engine counts every sub-job exactly once, but side effects outside the engine are
// the function's own: make them idempotent with the IdempotencyKey the engine hands to every call. The key
// is stable across attempts and redeliveries of the same unit of work (job, step, sub-job) and differs
// between units: write a file under that name, use it as the idempotency key of a payment API, or insert
// with it as a unique key.
//
// Split must be deterministic: given the same step-1 output it emits the same inputs in the same order,
// because a step 1 that is re-run after a crash re-splits and the engine matches sub-jobs by index.
package jobtype

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/jobmill/jobmill/app/job"
)

// Policy is re-exported so users define types from this package alone.
type Policy = job.Policy

// Backoff is re-exported for the same reason.
type Backoff = job.Backoff

// DefaultPolicy returns the policy used for zero fields.
func DefaultPolicy() Policy { return job.DefaultPolicy() }

// Definition is a job type.
type Definition struct {
	// Name identifies the type on submit ("invoices").
	Name string
	// Description is shown in listings.
	Description string
	// Step1 runs once per job and returns what Split splits. Nil means "the job input itself".
	Step1 func(ctx context.Context, sc StepContext, input []byte) ([]byte, error)
	// Split streams step 1's output as sub-job inputs through emit, in a deterministic order. It is
	// streamed so that a job can have millions of sub-jobs without holding them in memory.
	Split func(ctx context.Context, sc StepContext, step1Output []byte, emit func(subJobInput []byte) error) error
	// SubJob runs one sub-job. An error fails the attempt: it is retried by the policy.
	SubJob func(ctx context.Context, sc SubJobContext, input []byte) (result []byte, err error)
	// Step3 runs once after every sub-job has a final outcome. Nil means nothing to do.
	Step3 func(ctx context.Context, sc StepContext, summary Summary) ([]byte, error)
	// Policy: zero fields take DefaultPolicy's values.
	Policy Policy
	// ReportTwice is for testing the engine itself: when it returns true for a sub-job's input, the worker
	// reports that sub-job's outcome twice, as an at-least-once transport may. Nil for real job types.
	ReportTwice func(subJobInput []byte) bool
}

// StepContext describes the unit of work a step 1 or step 3 call performs.
type StepContext struct {
	JobID   string
	Tenant  string
	Step    int
	Attempt int
	// IdempotencyKey is "<job>/step<N>": the same for every attempt of this step of this job.
	IdempotencyKey string
}

// SubJobContext describes the unit of work one sub-job call performs.
type SubJobContext struct {
	JobID   string
	Tenant  string
	Index   int64
	Attempt int
	// IdempotencyKey is "<job>/subjob/<index>": the same for every attempt of this sub-job.
	IdempotencyKey string
}

// Summary is what step 3 gets to know about step 2.
type Summary struct {
	Input     []byte // the job's input
	Total     int64
	Succeeded int64
	Failed    int64
	// Results streams the results of succeeded sub-jobs in index order.
	Results func(fn func(index int64, result []byte) error) error
}

// StepKey is the idempotency key of a step of a job.
func StepKey(jobID string, step int) string { return fmt.Sprintf("%s/step%d", jobID, step) }

// SubJobKey is the idempotency key of a sub-job.
func SubJobKey(jobID string, index int64) string { return fmt.Sprintf("%s/subjob/%d", jobID, index) }

// Validate checks a definition before it is registered.
func (d Definition) Validate() error {
	var errs []error
	if d.Name == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if d.Split == nil {
		errs = append(errs, errors.New("no Split function"))
	}
	if d.SubJob == nil {
		errs = append(errs, errors.New("no SubJob function"))
	}
	if err := d.Policy.WithDefaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("job type %q: %w", d.Name, err)
	}
	return nil
}

// ErrUnknownType: no job type with that name is registered.
var ErrUnknownType = errors.New("unknown job type")

// Registry holds the job types a process knows. Managers need the policies, workers the functions: every
// process of a deployment registers the same types.
type Registry struct {
	mu    sync.RWMutex
	types map[string]Definition
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{types: map[string]Definition{}} }

// Register adds a job type; a second type with the same name is an error.
func (r *Registry) Register(d Definition) error {
	if err := d.Validate(); err != nil {
		return err
	}
	d.Policy = d.Policy.WithDefaults()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.types[d.Name]; ok {
		return fmt.Errorf("job type %q is already registered", d.Name)
	}
	r.types[d.Name] = d
	return nil
}

// MustRegister is Register for program start-up, where a bad definition is a programming error.
func (r *Registry) MustRegister(d Definition) {
	if err := r.Register(d); err != nil {
		panic(err)
	}
}

// Get returns the type named name.
func (r *Registry) Get(name string) (Definition, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.types[name]
	if !ok {
		return Definition{}, fmt.Errorf("%w %q (registered: %v)", ErrUnknownType, name, r.namesLocked())
	}
	return d, nil
}

// Names lists the registered types, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.namesLocked()
}

func (r *Registry) namesLocked() []string {
	names := make([]string, 0, len(r.types))
	for n := range r.types {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
