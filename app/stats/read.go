package stats

import (
	"time"
)

// accumulator sums the records of the jobs a read covers into their statistics.
type accumulator struct {
	st      Stats
	run     durationSet
	steps   [3]durationSet
	subJobs *Sketch
	subSum  time.Duration
}

func (a *accumulator) add(r Record) error {
	if a.subJobs == nil {
		a.subJobs = NewSketch()
	}
	if err := a.subJobs.MergeEncoded(r.Durations); err != nil {
		return err
	}
	a.subSum += r.DurationSum

	a.st.Jobs++
	switch r.Outcome {
	case OutcomeCompleted:
		a.st.JobsCompleted++
	case OutcomeFailed:
		a.st.JobsFailed++
	case OutcomeCancelled:
		a.st.JobsCancelled++
	}
	steps, ok, run, ended := r.stepDurations()
	for i := range steps {
		if ok[i] {
			a.steps[i].add(steps[i])
		}
	}
	if ended {
		a.run.add(run)
	}
	c := r.counters()
	a.st.Total += c.Total
	a.st.Succeeded += c.Succeeded
	a.st.Failed += c.Failed
	a.st.Attempts += c.Attempts
	a.st.Retries += c.Retries
	a.st.TimedOut += c.TimedOut
	a.st.Duplicates += c.Duplicates
	a.st.Late += c.Late
	return nil
}

func (a *accumulator) stats() Stats {
	st := a.st
	st.Run = a.run.result()
	for i := range a.steps {
		st.Steps[i] = a.steps[i].result()
	}
	if a.subJobs != nil {
		if n := a.subJobs.Count(); n > 0 {
			mean := a.subSum / time.Duration(n)
			st.SubJobs = Durations{Count: n, Mean: mean, P50: mean, P95: mean, P99: mean}
			if n > 1 {
				st.SubJobs.P50, st.SubJobs.P95, st.SubJobs.P99 = a.subJobs.Quantile(0.5), a.subJobs.Quantile(0.95), a.subJobs.Quantile(0.99)
			}
		}
	}
	return st
}

// durationSet summarises durations: exactly for one, in a sketch for more.
type durationSet struct {
	n      int64
	sum    time.Duration
	sketch *Sketch
}

func (d *durationSet) add(v time.Duration) {
	if d.sketch == nil {
		d.sketch = NewSketch()
	}
	d.n++
	d.sum += v
	d.sketch.Add(v)
}

func (d *durationSet) result() Durations {
	if d.n == 0 {
		return Durations{}
	}
	mean := d.sum / time.Duration(d.n)
	if d.n == 1 {
		return Durations{Count: 1, Mean: mean, P50: mean, P95: mean, P99: mean}
	}
	return Durations{Count: d.n, Mean: mean, P50: d.sketch.Quantile(0.5), P95: d.sketch.Quantile(0.95), P99: d.sketch.Quantile(0.99)}
}

// bucketWidths are the widths a throughput series steps through as its time span grows.
var bucketWidths = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// bucketWidth is the narrowest width of at least minWidth that covers the one-second buckets first to
// last in at most MaxBuckets buckets.
func bucketWidth(first, last time.Time, minWidth time.Duration) time.Duration {
	minWidth = max(minWidth.Round(time.Second), time.Second)
	fits := func(w time.Duration) bool {
		return w >= minWidth && alignDown(last, w).Sub(alignDown(first, w))/w < MaxBuckets
	}
	for _, w := range bucketWidths {
		if fits(w) {
			return w
		}
	}
	// Whole days beyond the table.
	const day = 24 * time.Hour
	w := max((last.Sub(first)/MaxBuckets+day)/day*day, minWidth.Truncate(time.Second))
	for !fits(w) {
		w += day
	}
	return w
}

// alignDown is the start of the bucket of width w that t falls in (buckets start at multiples of w since
// the Unix epoch).
func alignDown(t time.Time, w time.Duration) time.Time {
	us, wus := t.UnixMicro(), w.Microseconds()
	return time.UnixMicro(us - us%wus).UTC()
}

// fillBuckets returns the series from its first bucket to its last, with the empty ones in between.
func fillBuckets(buckets []Bucket, w time.Duration) []Bucket {
	if len(buckets) == 0 {
		return nil
	}
	first, last := buckets[0].Start.UTC(), buckets[len(buckets)-1].Start.UTC()
	out := make([]Bucket, 0, last.Sub(first)/w+1)
	i := 0
	for t := first; !t.After(last); t = t.Add(w) {
		b := Bucket{Start: t}
		for i < len(buckets) && !buckets[i].Start.After(t) {
			if buckets[i].Start.Equal(t) {
				b.Completed += buckets[i].Completed
			}
			i++
		}
		out = append(out, b)
	}
	return out
}
