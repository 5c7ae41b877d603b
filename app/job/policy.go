package job

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Policy is how a job type treats failure and time. It is copied onto each job when it is submitted, so
// changing a type's policy never changes the rules of jobs already running.
type Policy struct {
	// SubJobTimeout is how long one attempt of a sub-job may run before the tick counts it as failed.
	SubJobTimeout time.Duration `json:"subjob_timeout"`
	// StepTimeout is the same for one attempt of step 1 or step 3.
	StepTimeout time.Duration `json:"step_timeout"`
	// MaxAttempts is how many times a sub-job (or step 1/3) is tried before it is marked failed.
	MaxAttempts int `json:"max_attempts"`
	// Backoff spaces the attempts of a sub-job (steps 1 and 3 are retried at once).
	Backoff Backoff `json:"backoff"`
	// ToleratedFailures is how many sub-jobs may fail for good before the job fails.
	ToleratedFailures int64 `json:"tolerated_failures"`
	// ToleratedFailurePercent is the same as a share of all sub-jobs (0–100); the larger allowance wins.
	ToleratedFailurePercent float64 `json:"tolerated_failure_percent"`
	// SubJobsPerCommand is the most sub-jobs one work-queue command carries; a worker runs them one after
	// another and reports them together. 0 chooses by job size (see CommandSize); 1 sends one per command.
	SubJobsPerCommand int `json:"subjobs_per_command,omitempty"`
}

// Automatic command sizing: a job is split into at least autoMinCommands commands, so that a large worker
// pool still has work for every slot, and a command never carries more than autoMaxPerCommand sub-jobs.
const (
	autoMinCommands   = 1024
	autoMaxPerCommand = 32
	// autoMaxCommandTime bounds how long a worker may hold one command: its sub-jobs run in turn, each up
	// to SubJobTimeout. RabbitMQ closes a channel whose delivery stays unacknowledged for 30 minutes (its
	// default consumer_timeout), and a longer hold would come back as a redelivery.
	autoMaxCommandTime = 20 * time.Minute
	// MaxSubJobsPerCommand bounds an explicit setting: a command is one message on the work queue.
	MaxSubJobsPerCommand = 1000
	// MaxCommandInputBytes bounds the sub-job inputs one command carries, whatever its count, so that a
	// command of large inputs stays far below brokers' message size limits (Kafka's default is 1 MB); an
	// input larger than this travels alone. Workers bound the results of one report message the same way.
	MaxCommandInputBytes = 256 << 10
)

// CommandSize is how many sub-jobs of a job of total sub-jobs go into one command. Small jobs get one
// sub-job per command (all their sub-jobs can run in parallel); large ones carry up to 32, which divides
// the queue traffic per sub-job by as much without leaving workers idle, as long as the command's worst
// case (its size times SubJobTimeout) stays within 20 minutes. An explicit SubJobsPerCommand wins.
func (p Policy) CommandSize(total int64) int {
	if p.SubJobsPerCommand > 0 {
		return p.SubJobsPerCommand
	}
	size := min(max(total/autoMinCommands, 1), autoMaxPerCommand)
	if p.SubJobTimeout > 0 {
		size = min(size, max(int64(autoMaxCommandTime/p.SubJobTimeout), 1))
	}
	return int(size)
}

// Backoff is an exponential delay between attempts: Initial, then ×Multiplier, capped at Max.
type Backoff struct {
	Initial    time.Duration `json:"initial"`
	Max        time.Duration `json:"max"`
	Multiplier float64       `json:"multiplier"`
}

// DefaultPolicy suits sub-jobs of up to a few minutes.
func DefaultPolicy() Policy {
	return Policy{
		SubJobTimeout: 5 * time.Minute,
		StepTimeout:   15 * time.Minute,
		MaxAttempts:   3,
		Backoff:       Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2},
	}
}

// WithDefaults fills every zero field from DefaultPolicy.
func (p Policy) WithDefaults() Policy {
	d := DefaultPolicy()
	if p.SubJobTimeout == 0 {
		p.SubJobTimeout = d.SubJobTimeout
	}
	if p.StepTimeout == 0 {
		p.StepTimeout = d.StepTimeout
	}
	if p.MaxAttempts == 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.Backoff == (Backoff{}) {
		p.Backoff = d.Backoff
	}
	if p.Backoff.Multiplier == 0 {
		p.Backoff.Multiplier = 1
	}
	return p
}

// Validate rejects a policy that cannot be followed.
func (p Policy) Validate() error {
	var errs []error
	if p.SubJobTimeout <= 0 {
		errs = append(errs, fmt.Errorf("subjob timeout must be positive (got %s)", p.SubJobTimeout))
	}
	if p.StepTimeout <= 0 {
		errs = append(errs, fmt.Errorf("step timeout must be positive (got %s)", p.StepTimeout))
	}
	if p.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("max attempts must be at least 1 (got %d)", p.MaxAttempts))
	}
	if p.Backoff.Initial < 0 || p.Backoff.Max < 0 || !(p.Backoff.Multiplier >= 1) { // NaN fails too
		errs = append(errs, fmt.Errorf("backoff needs initial ≥ 0, max ≥ 0, multiplier ≥ 1 (got %+v)", p.Backoff))
	}
	if p.ToleratedFailures < 0 {
		errs = append(errs, fmt.Errorf("tolerated failures must not be negative (got %d)", p.ToleratedFailures))
	}
	if p.SubJobsPerCommand < 0 || p.SubJobsPerCommand > MaxSubJobsPerCommand {
		errs = append(errs, fmt.Errorf("subjobs per command must be within 0–%d, 0 for automatic (got %d)", MaxSubJobsPerCommand, p.SubJobsPerCommand))
	}
	if !(p.ToleratedFailurePercent >= 0 && p.ToleratedFailurePercent <= 100) { // NaN fails too
		errs = append(errs, fmt.Errorf("tolerated failure percent must be within 0–100 (got %g)", p.ToleratedFailurePercent))
	}
	return errors.Join(errs...)
}

// Delay is the wait before attempt number next (2 for the first retry).
func (b Backoff) Delay(next int) time.Duration {
	if next <= 1 || b.Initial <= 0 {
		return 0
	}
	d := float64(b.Initial) * math.Pow(b.Multiplier, float64(next-2))
	if b.Max > 0 && d > float64(b.Max) {
		return b.Max
	}
	if d >= math.MaxInt64 {
		return math.MaxInt64 // uncapped growth saturates rather than overflowing into a negative delay
	}
	return time.Duration(d)
}

// FailureAllowance is how many sub-jobs of total may fail for good without failing the job.
func (p Policy) FailureAllowance(total int64) int64 {
	byPercent := int64(math.Floor(float64(total) * p.ToleratedFailurePercent / 100))
	return max(p.ToleratedFailures, byPercent)
}
