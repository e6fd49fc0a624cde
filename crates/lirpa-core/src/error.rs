//! Errors of the core. Every error names what it is about (node, file, input) so the
//! user can act on it; nothing in the library panics on bad input.

/// Result alias used across lirpa.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A node could not be built or evaluated.
    #[error("node '{node}' ({op_type}): {msg}")]
    Node { node: String, op_type: String, msg: String },
    /// No registered plugin handles this operator.
    #[error(
        "unsupported operator '{op_type}' (domain '{domain}', opset {opset}) at node '{node}'; registered operators: {known}"
    )]
    Unsupported { node: String, op_type: String, domain: String, opset: i64, known: String },
    /// A registered operator used in a way its plugin does not implement yet
    /// (e.g. a product of two perturbed tensors in a linear-only plugin).
    #[error("node '{node}' ({op_type}): not implemented: {msg}")]
    Unimplemented { node: String, op_type: String, msg: String },
    /// A builder does not handle this use of its operator and leaves it to the next
    /// registered builder of the same operator type (see [`crate::registry`]). The
    /// graph builder never returns it: when every builder declines, the node is
    /// reported as [`Error::Unimplemented`] with the reasons.
    #[error("declined: {0}")]
    Declined(String),
    /// A value that must be finite is NaN or infinite.
    #[error("non-finite value in {0}")]
    NonFinite(String),
    /// Shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Anything else that is the caller's fault.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Attach a node name and op type to an error raised without that context.
    pub fn at_node(self, node: &str, op_type: &str) -> Error {
        match self {
            Error::Node { .. } | Error::Unsupported { .. } | Error::Declined(_) => self,
            Error::Unimplemented { node: n, msg, .. } if n.is_empty() => {
                Error::Unimplemented { node: node.to_string(), op_type: op_type.to_string(), msg }
            }
            e @ Error::Unimplemented { .. } => e,
            other => {
                Error::Node { node: node.to_string(), op_type: op_type.to_string(), msg: other.to_string() }
            }
        }
    }
}

impl Error {
    /// A not-yet-implemented use of an operator; the graph builder adds the node.
    pub fn unimplemented(msg: impl Into<String>) -> Error {
        Error::Unimplemented { node: String::new(), op_type: String::new(), msg: msg.into() }
    }
}

impl Error {
    /// A builder's refusal of one use of its operator (see [`Error::Declined`]).
    pub fn declined(msg: impl Into<String>) -> Error {
        Error::Declined(msg.into())
    }
}

/// Build an [`Error::Invalid`] with `format!` syntax.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::Error::Invalid(format!($($arg)*)) };
}
