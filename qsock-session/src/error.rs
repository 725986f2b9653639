//! The one error type of the session layer.

/// What went wrong, for callers that act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A configuration the session cannot run (unknown semantics or
    /// objective, a zero bound, no usable interface).
    InvalidConfig,
    /// A message larger than the session allows.
    TooLarge,
    /// The peer broke the protocol (garbage, a wrong proof, a refusal).
    Protocol,
    /// The session is closed, or every path died.
    Closed,
    /// A system call failed.
    Io,
    /// A blocking call gave up at its timeout.
    TimedOut,
}

/// An error with its kind and a message that says what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionError {
    /// Its kind.
    pub kind: ErrorKind,
    /// What happened, for a person.
    pub message: String,
}

impl SessionError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// An [`ErrorKind::Io`] error: `what` failed with `e`.
    pub fn io(what: &str, e: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Io, format!("{what}: {e}"))
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SessionError {}

/// The session layer's result.
pub type Result<T> = std::result::Result<T, SessionError>;
