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

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};

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
    // A byte scan, not `split_once('/')`: names are a few bytes long, where
    // the general char searcher's setup costs more than the scan (it was
    // 6 % of an in-process tell). `/` is ASCII, so the split is on a char
    // boundary.
    match address.bytes().position(|b| b == b'/') {
        Some(slash) => (Some(&address[..slash]), &address[slash + 1..]),
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

/// Who sent a message, `node/module`, as an [`Envelope`](crate::Envelope)
/// carries it: cloned with every message, so cloning is cheap.
///
/// The address of a module or client of this process is interned
/// ([`SenderAddress::interned`]): kept once for the life of the process,
/// and cloned by copying a pointer, with no reference count to touch. A
/// sender heard from a link is shared ([`From<Arc<str>>`]): a peer cannot
/// grow this process's memory for good by inventing names.
///
/// ```
/// use botbus_core::SenderAddress;
/// let a = SenderAddress::interned("robot/planner");
/// let b = SenderAddress::interned(&format!("robot/{}", "planner"));
/// assert_eq!(a, b);
/// assert!(std::ptr::eq(a.as_str(), b.as_str())); // one copy of the name
/// assert_eq!(SenderAddress::from(std::sync::Arc::<str>::from("arm/motor")), "arm/motor");
/// ```
#[derive(Clone)]
pub struct SenderAddress(SenderRepr);

#[derive(Clone)]
enum SenderRepr {
    /// A thin pointer to the interned name, so that the whole is no larger
    /// than an `Arc<str>`.
    Interned(&'static &'static str),
    Shared(Arc<str>),
}

/// Every address interned by this process.
static INTERNED: LazyLock<Mutex<HashMap<&'static str, &'static &'static str>>> = LazyLock::new(Default::default);

impl SenderAddress {
    /// The address interned: the same name interned twice is kept once.
    /// For the addresses of this process's own modules and clients, of
    /// which there are few; not for names heard from a peer.
    pub fn interned(address: &str) -> Self {
        let mut interned = INTERNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let name = match interned.get(address) {
            Some(name) => *name,
            None => {
                let name: &'static str = Box::leak(address.into());
                let thin: &'static &'static str = Box::leak(Box::new(name));
                interned.insert(name, thin);
                thin
            }
        };
        Self(SenderRepr::Interned(name))
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            SenderRepr::Interned(name) => name,
            SenderRepr::Shared(name) => name,
        }
    }
}

impl From<Arc<str>> for SenderAddress {
    fn from(address: Arc<str>) -> Self {
        Self(SenderRepr::Shared(address))
    }
}

impl From<String> for SenderAddress {
    /// A shared `address` (not interned).
    fn from(address: String) -> Self {
        Self(SenderRepr::Shared(Arc::from(address)))
    }
}

impl From<&str> for SenderAddress {
    /// A shared copy of `address` (not interned).
    fn from(address: &str) -> Self {
        Self(SenderRepr::Shared(Arc::from(address)))
    }
}

impl Deref for SenderAddress {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SenderAddress {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for SenderAddress {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SenderAddress {}

impl PartialEq<str> for SenderAddress {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SenderAddress {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::hash::Hash for SenderAddress {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for SenderAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SenderAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
