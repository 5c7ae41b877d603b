package sqlqueue

import "github.com/jobmill/jobmill/internal/servertest"

// The tests run on real servers, each in a schema or database of its own.
var (
	openPostgres = servertest.OpenPostgres
	openMySQL    = servertest.OpenMySQL
)
