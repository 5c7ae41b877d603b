package stats

import (
	"fmt"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// RelativeAccuracy bounds the error of every quantile the statistics report: a reported p99 is within 1%
// of a duration that really is the p99.
const RelativeAccuracy = 0.01

// Sketch is a distribution of durations in constant space (a DDSketch over microseconds): one job's
// sub-job durations, or many jobs' merged. Its dense store grows with the spread of the values, not
// their number: about 1,200 bins cover one microsecond to three hours.
type Sketch struct {
	dd *ddsketch.DDSketch
}

// sketchMapping is shared by every sketch, so that any two can be merged.
var sketchMapping = func() mapping.IndexMapping {
	m, err := mapping.NewLogarithmicMapping(RelativeAccuracy)
	if err != nil {
		panic(err) // a constant accuracy in (0, 1)
	}
	return m
}()

// NewSketch returns an empty sketch.
func NewSketch() *Sketch {
	return &Sketch{dd: ddsketch.NewDDSketch(sketchMapping, store.NewDenseStore(), store.NewDenseStore())}
}

// DecodeSketch reads what Encode wrote; no bytes is an empty sketch.
func DecodeSketch(b []byte) (*Sketch, error) {
	s := NewSketch()
	if len(b) == 0 {
		return s, nil
	}
	if err := s.dd.DecodeAndMergeWith(b); err != nil {
		return nil, fmt.Errorf("decode duration sketch: %w", err)
	}
	return s, nil
}

// Encode serialises the sketch with its index mapping, so that a sketch stored under another accuracy is
// refused on merge instead of being misread. An empty sketch encodes as nil.
func (s *Sketch) Encode() []byte {
	if s.Count() == 0 {
		return nil
	}
	var b []byte
	s.dd.Encode(&b, false)
	return b
}

// sketchValue is d in microseconds. Durations under a microsecond count as one microsecond: every value
// then lives in the positive store, the one Remove can take a value out of.
func sketchValue(d time.Duration) float64 {
	return float64(max(d.Microseconds(), 1))
}

// Add records one duration.
func (s *Sketch) Add(d time.Duration) {
	if err := s.dd.Add(sketchValue(d)); err != nil {
		panic(err) // a positive microsecond count below 2^63 is always trackable
	}
}

// Remove takes out one duration that Add recorded before, when a sub-job's success is replaced by an
// earlier report of it. DDSketch refuses negative counts, but its dense store counts bins exactly, so
// decrementing the value's bin undoes the Add.
func (s *Sketch) Remove(d time.Duration) {
	if s.Count() <= 1 {
		s.dd = NewSketch().dd
		return
	}
	s.dd.GetPositiveValueStore().AddWithCount(s.dd.Index(sketchValue(d)), -1)
}

// Merge adds every value of o.
func (s *Sketch) Merge(o *Sketch) error {
	return s.dd.MergeWith(o.dd)
}

// MergeEncoded adds every value of an encoded sketch.
func (s *Sketch) MergeEncoded(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if err := s.dd.DecodeAndMergeWith(b); err != nil {
		return fmt.Errorf("merge duration sketch: %w", err)
	}
	return nil
}

// Count is the number of durations recorded.
func (s *Sketch) Count() int64 {
	return int64(s.dd.GetCount() + 0.5)
}

// Quantile returns the duration at q (0..1), within RelativeAccuracy; zero for an empty sketch.
func (s *Sketch) Quantile(q float64) time.Duration {
	v, err := s.dd.GetValueAtQuantile(q)
	if err != nil {
		return 0
	}
	return time.Duration(v+0.5) * time.Microsecond
}
