//! The event store contract on PostgreSQL: each test on a schema of its own, dropped afterwards.
//! Runs when `LEDGER_TEST_PG_URL` is set (`.ci/run` sets it); otherwise says it was skipped.

use ledger_store_postgres::testing::TestSchema;

ledger_store::conformance_tests!(TestSchema::fresh_store());
