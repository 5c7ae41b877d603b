package graph

import "time"

// SetWebsocketPingInterval changes the keep-alive interval of handlers created afterwards.
func SetWebsocketPingInterval(d time.Duration) (restore func()) {
	old := wsPingInterval
	wsPingInterval = d
	return func() { wsPingInterval = old }
}
