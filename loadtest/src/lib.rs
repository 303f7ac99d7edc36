//! robust-bench, the load generator. Not built yet (see the load-test issue).
