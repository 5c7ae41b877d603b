package metrics

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestJoinLag(t *testing.T) {
	errDown := errors.New("down")
	src := func(l []Lag, err error) LagSource {
		return func(context.Context) ([]Lag, error) { return l, err }
	}
	a := Lag{Consumer: "manager", Topic: "events", Messages: 3}
	b := Lag{Consumer: WorkQueueConsumer, Topic: "work", Messages: 1}
	got, err := JoinLag(src([]Lag{a}, nil), src(nil, errDown), src([]Lag{b}, nil))(context.Background())
	if !errors.Is(err, errDown) {
		t.Errorf("error %v, want the failing source's", err)
	}
	if want := []Lag{a, b}; !slices.Equal(got, want) {
		t.Errorf("lags %+v, want %+v: one failing source must not hide the others", got, want)
	}
	if got, err := JoinLag()(context.Background()); err != nil || len(got) != 0 {
		t.Errorf("no sources: %+v, %v", got, err)
	}
}
