package graph

import "time"

// SetWebsocketPingInterval changes the keep-alive interval of handlers created afterwards.
func SetWebsocketPingInterval(d time.Duration) (restore func()) {
	old := wsPingInterval
	wsPingInterval = d
	return func() { wsPingInterval = old }
}

// TimelineCursor is the cursor of the entry at position pos of a job's timeline: a fixture that runs no
// status view has no entries to take one from.
func TimelineCursor(jobID string, pos int64) string { return timelineCursor(jobID, pos) }
