package postgres

// Statement texts, for tests that look at their plans.
var (
	SnapshotOfSQL = snapshotOfSQL
	FinishSQL     = finishSQL
)
