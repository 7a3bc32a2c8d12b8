//! Shared helpers for the integration tests.

pub mod mock_anthropic;
