//! The tool's error and its exit code.

use std::fmt;

use pubsub_core::ErrorKind;

/// Why a command failed; [`CliError::exit_code`] maps it to 1 or 2.
#[derive(Debug)]
pub enum CliError {
    /// An error from the library; its kind decides the exit code.
    Library(pubsub_core::Error),
    /// A bad argument found after parsing (exit code 2).
    Usage(String),
    /// The command ran but did not succeed (exit code 1).
    Failed(String),
    /// A signal stopped the command, which finished cleanly: its one-line
    /// summary (exit code 128 + the signal's number).
    Interrupted {
        /// SIGINT or SIGTERM.
        signal: i32,
        /// What was done, shown on stderr.
        summary: String,
    },
}

impl CliError {
    /// 2 for usage and configuration errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::Interrupted { signal, .. } => crate::signals::exit_code(*signal),
            CliError::Library(e) => match e.kind() {
                ErrorKind::InvalidConfig | ErrorKind::InvalidTopic | ErrorKind::Unsupported => 2,
                _ => 1,
            },
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Library(e) => write!(f, "{e}"),
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
            CliError::Interrupted { signal, summary } => {
                write!(f, "stopped by {}: {summary}", crate::signals::name(*signal))
            }
        }
    }
}

impl CliError {
    /// Stopped by `signal`, having done what `summary` says.
    pub fn interrupted(signal: i32, summary: impl Into<String>) -> CliError {
        CliError::Interrupted {
            signal,
            summary: summary.into(),
        }
    }
}

impl From<pubsub_core::Error> for CliError {
    fn from(e: pubsub_core::Error) -> Self {
        CliError::Library(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pubsub_core::Error;

    #[test]
    fn config_and_topic_errors_are_usage_errors() {
        let code = |kind| CliError::from(Error::new(kind, "x")).exit_code();
        assert_eq!(code(ErrorKind::InvalidConfig), 2);
        assert_eq!(code(ErrorKind::InvalidTopic), 2);
        assert_eq!(code(ErrorKind::Unsupported), 2);
        assert_eq!(code(ErrorKind::Connect), 1);
        assert_eq!(code(ErrorKind::Auth), 1);
        assert_eq!(code(ErrorKind::Timeout), 1);
        assert_eq!(CliError::Usage("u".into()).exit_code(), 2);
        assert_eq!(CliError::Failed("f".into()).exit_code(), 1);
        assert_eq!(CliError::interrupted(2, "x").exit_code(), 130);
        assert_eq!(CliError::interrupted(15, "x").exit_code(), 143);
    }
}
