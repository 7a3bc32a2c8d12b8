//! Exit codes: the one place where a command's result, or the error it ended with, becomes the
//! code the shell sees (documented in the README, "Exit codes").

use loopd_actors::generation::RecordError;
use loopd_actors::store::StoreError;
use loopd_actors::tree::GivenUp;

/// Exit codes of `loopd` (DESIGN.md, Contracts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every test passed / the command succeeded.
    Ok = 0,
    /// Finished with tests not passed.
    NotAllPassed = 1,
    /// Invalid input: a fleet, loop or tests file, an argument, a state directory refused.
    Invalid = 2,
    /// Stopped waiting on a condition that needs a person.
    NeedsPerson = 3,
    /// An internal failure: the store cannot be written, made durable or read back (a full
    /// disk, an I/O error, a corrupt record), or the scheduler or the monitor was given up
    /// after its restart intensity; 70 is sysexits' EX_SOFTWARE.
    Internal = 70,
    /// Interrupted by a signal.
    Interrupted = 130,
}

impl Exit {
    /// The code for a command that ended with `err`: internal when the cause is the store's
    /// (it cannot be written, made durable or read back), invalid input otherwise (commands
    /// report what they refuse as errors).
    pub fn of_error(err: &anyhow::Error) -> Exit {
        for cause in err.chain() {
            if cause.downcast_ref::<GivenUp>().is_some() {
                return Exit::Internal;
            }
            if let Some(e) = cause.downcast_ref::<StoreError>() {
                return match e {
                    // Another loopd's lock, a newer store, a store that lost writes (`loopd
                    // recover`), a record that is not one: the user's to settle.
                    StoreError::Open { .. }
                    | StoreError::NewerVersion { .. }
                    | StoreError::Behind { .. }
                    | StoreError::Record(RecordError::Invalid { .. }) => Exit::Invalid,
                    StoreError::Corrupt { .. }
                    | StoreError::Flush(_)
                    | StoreError::Sled(_)
                    | StoreError::Record(RecordError::Io { .. }) => Exit::Internal,
                };
            }
        }
        Exit::Invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_io_failures_are_internal_and_the_rest_invalid_input() {
        let flush = anyhow::Error::from(StoreError::Flush("No space left on device".into()));
        assert_eq!(Exit::of_error(&flush.context("recording")), Exit::Internal);
        let io = StoreError::Sled(sled::Error::Io(std::io::Error::other("disk")));
        assert_eq!(Exit::of_error(&io.into()), Exit::Internal);
        assert_eq!(
            Exit::of_error(&anyhow::anyhow!("no loop named `x`")),
            Exit::Invalid
        );
    }
}
