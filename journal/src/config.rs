//! The `[journal]` section of the server configuration.

use serde::Deserialize;

/// Settings of the journal role. Every key has a default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {}
