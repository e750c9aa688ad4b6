//! Where a node's token comes from: a file or an environment variable —
//! never a command-line argument, which every user of the machine can read
//! in the process list.
//!
//! ```
//! use botbus_actors::{env_token, read_token, TokenSourceError};
//!
//! std::env::set_var("DOC_ROBOT_TOKEN", "a shared secret, 16+ bytes");
//! let token = env_token("DOC_ROBOT_TOKEN").unwrap();
//! assert_eq!(format!("{token:?}"), "AuthToken(<redacted>)");
//! assert!(matches!(env_token("DOC_NO_SUCH_TOKEN"), Err(TokenSourceError::Unset(_))));
//! assert!(read_token("/no/such/token").unwrap_err().to_string().contains("/no/such/token"));
//! ```

use std::path::{Path, PathBuf};

use botbus_core::{AuthToken, TokenError};

/// Why a token could not be had. Names the file or variable.
#[derive(Debug, thiserror::Error)]
pub enum TokenSourceError {
    /// The file could not be read.
    #[error("token file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Other users can read the file.
    #[error(
        "token file {} can be read by other users (mode {mode:03o}); make it owner-only: chmod 600 {}",
        path.display(),
        path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds no usable token.
    #[error("token file {}: {source}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with the token.
        source: TokenError,
    },
    /// The variable is not set (or is not UTF-8).
    #[error("environment variable {0} is not set")]
    Unset(String),
    /// The variable holds no usable token.
    #[error("environment variable {var}: {source}")]
    BadVar {
        /// The variable.
        var: String,
        /// What is wrong with the token.
        source: TokenError,
    },
}

/// The token in the file at `path` (trailing white space removed). On Unix
/// the file must not be readable by other users.
pub fn read_token(path: impl AsRef<Path>) -> Result<AuthToken, TokenSourceError> {
    let path = path.as_ref();
    let read_error = |source| TokenSourceError::Read {
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(read_error)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenSourceError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    AuthToken::new(bytes).map_err(|source| TokenSourceError::BadFile {
        path: path.to_owned(),
        source,
    })
}

/// The token in the environment variable `var`.
pub fn env_token(var: &str) -> Result<AuthToken, TokenSourceError> {
    let value = std::env::var(var).map_err(|_| TokenSourceError::Unset(var.to_owned()))?;
    AuthToken::new(value.into_bytes()).map_err(|source| TokenSourceError::BadVar {
        var: var.to_owned(),
        source,
    })
}
