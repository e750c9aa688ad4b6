//! [`Endpoint`]: where a link connects or listens, parsed from a URL-like
//! string. The scheme picks the transport.
//!
//! | form | meaning |
//! |---|---|
//! | `mem://name` | in-process link (tests, the router's own proofs) |
//! | `stdio:` | this process's stdin/stdout, or a child's |
//! | `pipe://name` | a named local endpoint (a socket in the runtime dir; a Windows named pipe) |
//! | `pipe:///abs/path.sock` | a Unix domain socket at that absolute path |
//! | `tcp://host:port` | TCP (IPv6 hosts in brackets: `tcp://[::1]:7000`) |
//! | `tls://host:port` | TCP with TLS (rustls) |
//!
//! ```
//! use botbus_core::Endpoint;
//!
//! let ep: Endpoint = "tcp://127.0.0.1:7000".parse().unwrap();
//! assert_eq!(ep.scheme(), "tcp");
//! assert_eq!(ep.to_string(), "tcp://127.0.0.1:7000");
//! let err = "udp://x:1".parse::<Endpoint>().unwrap_err();
//! assert!(err.to_string().contains("udp://x:1"));
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Scheme of in-process links.
pub const MEM_SCHEME: &str = "mem";
/// Scheme of stdin/stdout links.
pub const STDIO_SCHEME: &str = "stdio";
/// Scheme of named local endpoints.
pub const PIPE_SCHEME: &str = "pipe";
/// Scheme of TCP links.
pub const TCP_SCHEME: &str = "tcp";
/// Scheme of TCP links wrapped in TLS.
pub const TLS_SCHEME: &str = "tls";

/// Why an endpoint string could not be parsed. Always names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint `{input}`: {reason}")]
pub struct EndpointError {
    /// The string given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A named local endpoint: a bare name or an absolute socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PipeAddr {
    /// `pipe://name`: placed by the transport (runtime dir, or `\\.\pipe\name`).
    Name(String),
    /// `pipe:///abs/path.sock`: exactly this path.
    Path(PathBuf),
}

/// Where a link connects or listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `mem://name`
    Mem(String),
    /// `stdio:`
    Stdio,
    /// `pipe://name` or `pipe:///abs/path.sock`
    Pipe(PipeAddr),
    /// `tcp://host:port`
    Tcp {
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// Port; 0 asks the OS for one when listening.
        port: u16,
    },
    /// `tls://host:port`: TCP carrying TLS.
    Tls {
        /// Host name or IP address (IPv6 without brackets); a connecting
        /// side checks the listener's certificate against it.
        host: String,
        /// Port; 0 asks the OS for one when listening.
        port: u16,
    },
}

impl Endpoint {
    /// The scheme: `mem`, `stdio`, `pipe`, `tcp` or `tls`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Endpoint::Mem(_) => MEM_SCHEME,
            Endpoint::Stdio => STDIO_SCHEME,
            Endpoint::Pipe(_) => PIPE_SCHEME,
            Endpoint::Tcp { .. } => TCP_SCHEME,
            Endpoint::Tls { .. } => TLS_SCHEME,
        }
    }

    /// Host and port of a `tcp` or `tls` endpoint.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        match self {
            Endpoint::Tcp { host, port } | Endpoint::Tls { host, port } => Some((host, *port)),
            _ => None,
        }
    }

    /// Whether the endpoint can only be reached from this machine: `mem`,
    /// `stdio` and `pipe` always; `tcp` and `tls` when the host is
    /// `localhost` or a loopback address. A node refuses to listen
    /// unauthenticated anywhere else.
    ///
    /// ```
    /// use botbus_core::Endpoint;
    /// let local = |s: &str| s.parse::<Endpoint>().unwrap().is_local_only();
    /// assert!(local("tcp://127.0.0.1:0") && local("tcp://[::1]:0") && local("tls://localhost:7000"));
    /// assert!(!local("tcp://0.0.0.0:7000") && !local("tcp://robot.lan:7000"));
    /// ```
    pub fn is_local_only(&self) -> bool {
        match self.host_port() {
            None => true,
            Some((host, _)) => {
                host.eq_ignore_ascii_case("localhost")
                    || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
        }
    }
}

fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(input: &str) -> Result<Self, EndpointError> {
        let fail = |reason: &str| EndpointError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input == "stdio:" || input == "stdio://" {
            return Ok(Endpoint::Stdio);
        }
        let Some((scheme, rest)) = input.split_once("://") else {
            return Err(fail("expected `scheme://…` (mem, pipe, tcp, tls) or `stdio:`"));
        };
        match scheme {
            MEM_SCHEME if is_simple_name(rest) => Ok(Endpoint::Mem(rest.to_owned())),
            MEM_SCHEME => Err(fail("a mem name is letters, digits, `_`, `-` or `.`")),
            PIPE_SCHEME if rest.starts_with('/') => {
                if rest.len() == 1 || rest.ends_with('/') {
                    Err(fail("a pipe path must name a socket file"))
                } else {
                    Ok(Endpoint::Pipe(PipeAddr::Path(PathBuf::from(rest))))
                }
            }
            PIPE_SCHEME if is_simple_name(rest) => Ok(Endpoint::Pipe(PipeAddr::Name(rest.to_owned()))),
            PIPE_SCHEME => Err(fail(
                "expected `pipe://name` (letters, digits, `_`, `-`, `.`) or `pipe:///absolute/path.sock`",
            )),
            TCP_SCHEME | TLS_SCHEME => {
                let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
                    let (host, after) = bracketed
                        .split_once(']')
                        .ok_or_else(|| fail("unclosed `[` in IPv6 host"))?;
                    let port = after
                        .strip_prefix(':')
                        .ok_or_else(|| fail("expected `:port` after the IPv6 host"))?;
                    (host, port)
                } else {
                    rest.rsplit_once(':')
                        .ok_or_else(|| fail(&format!("expected `{scheme}://host:port`")))?
                };
                if host.is_empty() || host.contains(['/', ' ']) || (!rest.starts_with('[') && host.contains(':')) {
                    return Err(fail("expected a host name or IP address before `:port`"));
                }
                let port = port
                    .parse::<u16>()
                    .map_err(|_| fail("the port must be a number from 0 to 65535"))?;
                let host = host.to_owned();
                Ok(match scheme {
                    TCP_SCHEME => Endpoint::Tcp { host, port },
                    _ => Endpoint::Tls { host, port },
                })
            }
            other => Err(fail(&format!(
                "unknown scheme `{other}` (expected mem, stdio, pipe, tcp or tls)"
            ))),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Mem(name) => write!(f, "mem://{name}"),
            Endpoint::Stdio => f.write_str("stdio:"),
            Endpoint::Pipe(PipeAddr::Name(name)) => write!(f, "pipe://{name}"),
            Endpoint::Pipe(PipeAddr::Path(path)) => write!(f, "pipe://{}", path.display()),
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Tls { host, port } if host.contains(':') => write!(f, "tls://[{host}]:{port}"),
            Endpoint::Tls { host, port } => write!(f, "tls://{host}:{port}"),
        }
    }
}
