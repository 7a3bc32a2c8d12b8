//! Shared helpers for the integration tests.

pub mod mock_anthropic;
pub mod mock_openai;
