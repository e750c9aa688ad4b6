//! Tokens and TLS certificates made at test time, in a directory of the
//! test's own that is removed when dropped.

use std::path::{Path, PathBuf};

use botbus::TlsConfig;

/// A directory of the test's own under the temporary directory; removed
/// with everything in it when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        let dir = std::env::temp_dir().join(super::unique(prefix));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` in the directory, owner-only.
    pub fn write_secret(&self, name: &str, contents: &[u8]) -> PathBuf {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.0.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("secret file");
        file.write_all(contents).expect("secret written");
        path
    }

    /// A token file holding `token`.
    pub fn token_file(&self, name: &str, token: &str) -> PathBuf {
        self.write_secret(name, format!("{token}\n").as_bytes())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `names` (DNS names or IP addresses), and
/// its key, written as PEM files; returns (certificate, key).
pub fn self_signed(scratch: &Scratch, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names).expect("rcgen makes a certificate");
    let cert = scratch.write_secret(&format!("{stem}.crt"), made.cert.pem().as_bytes());
    let key = scratch.write_secret(&format!("{stem}.key"), made.signing_key.serialize_pem().as_bytes());
    (cert, key)
}

/// Both ends of mutual TLS on loopback: a listener whose certificate names
/// `localhost` and 127.0.0.1 and that requires client certificates, and a
/// client with its own certificate that trusts the listener's.
pub struct MutualTls {
    pub listener: TlsConfig,
    pub client: TlsConfig,
    /// The files, for tests that build their own configurations.
    pub server_cert: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn mutual_tls(scratch: &Scratch) -> MutualTls {
    let (server_cert, server_key) = self_signed(scratch, "listener", &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = self_signed(scratch, "client", &["client.botbus.test"]);
    let listener = TlsConfig::default()
        .identity(&server_cert, &server_key)
        .and_then(|c| c.require_client_certs(&client_cert))
        .expect("listener TLS configuration");
    let client = TlsConfig::default()
        .identity(&client_cert, &client_key)
        .and_then(|c| c.trust(&server_cert))
        .expect("client TLS configuration");
    MutualTls {
        listener,
        client,
        server_cert,
        client_cert,
        client_key,
    }
}
