//! Names of nodes and modules, and addresses `node/module`.
//!
//! A module is addressed by its bare name (`motor`: the one module of that
//! name this node can see, local first) or qualified by its node
//! (`arm/motor`: that node's `motor`, wherever it is).
//!
//! ```
//! use botbus_core::Address;
//!
//! let a: Address = "arm/motor".parse().unwrap();
//! assert_eq!(a.node(), Some("arm"));
//! assert_eq!(a.module(), "motor");
//! assert!("arm/motor/extra".parse::<Address>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

/// Why a name or address is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name `{input}`: {reason}")]
pub struct NameError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks a node or module name: 1 to 128 characters from `A-Z a-z 0-9 _ - .`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let error = |reason| {
        Err(NameError {
            input: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return error("a name cannot be empty");
    }
    if name.len() > 128 {
        return error("a name is at most 128 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return error("a name may hold only letters, digits, `_`, `-` and `.`");
    }
    Ok(())
}

/// Splits an address into its node (if named) and module, without checking
/// or allocating: the router's per-message form of [`Address`].
///
/// ```
/// assert_eq!(botbus_core::address::split("arm/motor"), (Some("arm"), "motor"));
/// assert_eq!(botbus_core::address::split("motor"), (None, "motor"));
/// ```
pub fn split(address: &str) -> (Option<&str>, &str) {
    match address.split_once('/') {
        Some((node, module)) => (Some(node), module),
        None => (None, address),
    }
}

/// Where a message goes: a module, optionally on a named node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    node: Option<String>,
    module: String,
}

impl Address {
    /// The node named in the address, if any.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The module name.
    pub fn module(&self) -> &str {
        &self.module
    }
}

impl FromStr for Address {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, NameError> {
        match split(s) {
            (Some(node), module) => {
                validate_name(node)?;
                validate_name(module).map_err(|e| NameError {
                    input: s.to_owned(),
                    ..e
                })?;
                Ok(Self {
                    node: Some(node.to_owned()),
                    module: module.to_owned(),
                })
            }
            (None, _) => {
                validate_name(s)?;
                Ok(Self {
                    node: None,
                    module: s.to_owned(),
                })
            }
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{node}/{}", self.module),
            None => f.write_str(&self.module),
        }
    }
}
