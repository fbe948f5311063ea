package postgres

// Statement texts, for tests that look at their plans.
var (
	ClaimLockedSQL = claimLockedSQL
	SnapshotOfSQL  = snapshotOfSQL
	FinishSQL      = finishSQL
)
