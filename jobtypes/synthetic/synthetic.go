// Package synthetic is a job type for demos and benchmarks: a chosen number of sub-jobs that sleep for a
// chosen time, fail at a chosen rate and report twice at a chosen rate.
package synthetic

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"time"

	"github.com/jobmill/jobmill/app/jobtype"
)

// Name is the type's name on submit.
const Name = "synthetic"

// Input parameters of a synthetic job.
type Input struct {
	SubJobs int64 `json:"subjobs"`
	// DurationMS is how long each sub-job sleeps, plus up to JitterMS more.
	DurationMS int `json:"duration_ms"`
	JitterMS   int `json:"jitter_ms"`
	// FailureRate is the chance (0–1) that one attempt of a sub-job fails.
	FailureRate float64 `json:"failure_rate"`
	// DuplicateRate is the chance (0–1) that a sub-job's success is reported twice.
	DuplicateRate float64 `json:"duplicate_rate"`
	Seed          uint64  `json:"seed"`
}

// ParseInput validates the input of a synthetic job.
func ParseInput(raw []byte) (Input, error) {
	var in Input
	if err := json.Unmarshal(raw, &in); err != nil {
		return in, fmt.Errorf("synthetic input: %w", err)
	}
	switch {
	case in.SubJobs < 0:
		return in, errors.New("synthetic input: subjobs must not be negative")
	case in.DurationMS < 0 || in.JitterMS < 0:
		return in, errors.New("synthetic input: duration_ms and jitter_ms must not be negative")
	case in.FailureRate < 0 || in.FailureRate > 1 || in.DuplicateRate < 0 || in.DuplicateRate > 1:
		return in, errors.New("synthetic input: rates must be within 0–1")
	}
	return in, nil
}

// subJobInput is 8 bytes of index plus the parameters each sub-job needs, kept small for million-sub-job jobs.
type subJobInput struct {
	Index int64   `json:"i"`
	D     int     `json:"d,omitempty"`
	J     int     `json:"j,omitempty"`
	F     float64 `json:"f,omitempty"`
	U     float64 `json:"u,omitempty"`
	S     uint64  `json:"s,omitempty"`
}

// DefaultSubJobTimeout is the synthetic type's sub-job time-out when the policy leaves it zero: its
// sub-jobs sleep for milliseconds, and a short time-out lets large jobs carry more sub-jobs per command
// (job.Policy.CommandSize keeps a command's worst case within 20 minutes).
const DefaultSubJobTimeout = time.Minute

// Definition returns the synthetic job type with the given policy.
func Definition(policy jobtype.Policy) jobtype.Definition {
	if policy.SubJobTimeout == 0 {
		policy.SubJobTimeout = DefaultSubJobTimeout
	}
	return jobtype.Definition{
		Name:        Name,
		Description: "configurable no-op, sleeping or failing sub-jobs for demos and benchmarks",
		Split: func(ctx context.Context, _ jobtype.StepContext, out []byte, emit func([]byte) error) error {
			in, err := ParseInput(out)
			if err != nil {
				return err
			}
			for i := int64(0); i < in.SubJobs; i++ {
				b, _ := json.Marshal(subJobInput{Index: i, D: in.DurationMS, J: in.JitterMS, F: in.FailureRate, U: in.DuplicateRate, S: in.Seed})
				if err := emit(b); err != nil {
					return err
				}
			}
			return nil
		},
		SubJob: func(ctx context.Context, sc jobtype.SubJobContext, raw []byte) ([]byte, error) {
			var in subJobInput
			if err := json.Unmarshal(raw, &in); err != nil {
				return nil, fmt.Errorf("sub-job input: %w", err)
			}
			if d := time.Duration(in.D)*time.Millisecond + jitter(in, sc.Attempt); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			if in.F > 0 && chance(in.S, in.Index, sc.Attempt, 1) < in.F {
				return nil, fmt.Errorf("synthetic failure of sub-job %d, attempt %d", in.Index, sc.Attempt)
			}
			return nil, nil
		},
		Step3: func(ctx context.Context, _ jobtype.StepContext, s jobtype.Summary) ([]byte, error) {
			return json.Marshal(map[string]int64{"total": s.Total, "succeeded": s.Succeeded, "failed": s.Failed})
		},
		Policy: policy,
		ReportTwice: func(raw []byte) bool {
			var in subJobInput
			if json.Unmarshal(raw, &in) != nil || in.U == 0 {
				return false
			}
			return chance(in.S, in.Index, 0, 2) < in.U
		},
	}
}

func jitter(in subJobInput, attempt int) time.Duration {
	if in.J == 0 {
		return 0
	}
	return time.Duration(chance(in.S, in.Index, attempt, 3) * float64(in.J) * float64(time.Millisecond))
}

// chance is a deterministic number in [0,1) for (seed, index, attempt, purpose): reruns see the same dice.
func chance(seed uint64, index int64, attempt int, purpose byte) float64 {
	h := fnv.New64a()
	var b [25]byte
	binary.LittleEndian.PutUint64(b[0:], seed)
	binary.LittleEndian.PutUint64(b[8:], uint64(index))
	binary.LittleEndian.PutUint64(b[16:], uint64(attempt))
	b[24] = purpose
	_, _ = h.Write(b[:])
	return rand.New(rand.NewPCG(h.Sum64(), 0)).Float64()
}
