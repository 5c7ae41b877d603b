// Package jobtest builds job messages for tests.
package jobtest

import "github.com/jobmill/jobmill/app/job"

// Completed is the message a worker publishes for one successful attempt.
func Completed(e *job.Step2SubjobCompleted) *job.Step2SubjobsReported {
	return &job.Step2SubjobsReported{JobID: e.JobID, Completed: []job.Step2SubjobCompleted{*e}}
}

// Failed is the message a worker publishes for one failed attempt.
func Failed(e *job.Step2SubjobFailed) *job.Step2SubjobsReported {
	return &job.Step2SubjobsReported{JobID: e.JobID, Failed: []job.Step2SubjobFailed{*e}}
}
