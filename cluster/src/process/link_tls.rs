//! [`LinkTlsArgs`]: the link TLS files of a gate or node (`--link-tls-ca`, `--link-tls-cert`,
//! `--link-tls-key`). All three: mutual TLS on every link; none: plaintext links (`switchyard dev` and local
//! clusters stay zero-config); some but not all: the process refuses to start, naming what is missing, so a
//! half-configured cluster never runs open by accident.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::ProcessError;
use crate::link::tls::{LinkRole, LinkTls, LinkTlsFiles};

/// Mutual TLS on gate ↔ node links.
#[derive(Debug, Clone, Args)]
pub struct LinkTlsArgs {
    /// PEM bundle of the cluster's link CA: with --link-tls-cert and --link-tls-key, every gate ↔ node link
    /// is mutual TLS and only peers with a certificate of this CA are linked (none of the three: plaintext).
    #[arg(long, env = "SWITCHYARD_LINK_TLS_CA")]
    pub link_tls_ca: Option<PathBuf>,
    /// PEM link certificate chain of this process, issued by --link-tls-ca.
    #[arg(long, env = "SWITCHYARD_LINK_TLS_CERT")]
    pub link_tls_cert: Option<PathBuf>,
    /// PEM private key of --link-tls-cert.
    #[arg(long, env = "SWITCHYARD_LINK_TLS_KEY")]
    pub link_tls_key: Option<PathBuf>,
    /// How often the link TLS files are checked for a replacement (0: never); new links use a replaced set,
    /// established links stay up.
    #[arg(long, env = "SWITCHYARD_LINK_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = super::parse_duration)]
    pub link_tls_reload_interval: Duration,
}

const FLAGS: [(&str, &str); 3] = [
    ("--link-tls-ca", crate::contract::env::LINK_TLS_CA),
    ("--link-tls-cert", crate::contract::env::LINK_TLS_CERT),
    ("--link-tls-key", crate::contract::env::LINK_TLS_KEY),
];

impl LinkTlsArgs {
    /// The link TLS of a process of `role`, `None` for plaintext links. The files are read and checked here
    /// (inside a Tokio runtime, their reload starts too).
    ///
    /// # Errors
    /// [`ProcessError::LinkTlsPartial`] when some of the three are given and not all;
    /// [`ProcessError::LinkTls`] naming a file that cannot be used.
    pub fn load(&self, role: LinkRole) -> Result<Option<LinkTls>, ProcessError> {
        let given = [&self.link_tls_ca, &self.link_tls_cert, &self.link_tls_key];
        match given {
            [None, None, None] => Ok(None),
            [Some(ca), Some(cert), Some(key)] => {
                let files = LinkTlsFiles {
                    ca: ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                };
                Ok(Some(LinkTls::load(files, role, self.link_tls_reload_interval)?))
            }
            _ => {
                let name = |(flag, env): &(&str, &str)| format!("{flag} ({env})");
                let (set, missing): (Vec<_>, Vec<_>) =
                    FLAGS.iter().zip(given).partition(|(_, value)| value.is_some());
                Err(ProcessError::LinkTlsPartial {
                    given: set
                        .iter()
                        .map(|(flag, _)| name(flag))
                        .collect::<Vec<_>>()
                        .join(", "),
                    missing: missing
                        .iter()
                        .map(|(flag, _)| name(flag))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        tls: LinkTlsArgs,
    }

    #[test]
    fn none_is_plaintext_and_some_but_not_all_is_refused() {
        let none = Command::try_parse_from(["x"]).unwrap();
        assert!(none.tls.load(LinkRole::Node).unwrap().is_none());
        let partial =
            Command::try_parse_from(["x", "--link-tls-cert", "/c.pem", "--link-tls-key", "/k.pem"]).unwrap();
        let error = partial.tls.load(LinkRole::Gate).unwrap_err().to_string();
        assert!(
            error.contains("--link-tls-ca (SWITCHYARD_LINK_TLS_CA)")
                && error.contains("--link-tls-cert")
                && error.contains("plaintext"),
            "{error}"
        );
        let missing_file = Command::try_parse_from([
            "x",
            "--link-tls-ca",
            "/nonexistent/ca.pem",
            "--link-tls-cert",
            "/c.pem",
            "--link-tls-key",
            "/k.pem",
        ])
        .unwrap();
        let error = missing_file.tls.load(LinkRole::Node).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }
}
