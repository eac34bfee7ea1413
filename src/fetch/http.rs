//! HTTP(S) downloads: rustls on ring, redirects followed, bounded waits.

use std::io::{self, Read};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use super::error::AttemptFailure;

pub(crate) struct Http {
    connect_timeout: Duration,
    read_timeout: Duration,
    /// Built on first use: loading the system's certificates takes a while,
    /// and most fetches are answered by the store.
    agent: OnceLock<ureq::Agent>,
}

/// An open response body and its announced length.
pub(crate) struct Download {
    pub(crate) length: Option<u64>,
    pub(crate) body: Box<dyn Read + Send>,
}

impl Http {
    pub(crate) fn new(connect_timeout: Duration, read_timeout: Duration) -> Self {
        Http {
            connect_timeout,
            read_timeout,
            agent: OnceLock::new(),
        }
    }

    fn agent(&self) -> &ureq::Agent {
        self.agent.get_or_init(|| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_resolve(Some(self.connect_timeout))
                .timeout_connect(Some(self.connect_timeout))
                .timeout_send_request(Some(self.connect_timeout))
                // Per read, so a large download on a slow link is not cut off.
                .timeout_per_read(Some(self.read_timeout))
                .user_agent(concat!("bake/", env!("CARGO_PKG_VERSION")))
                .tls_config(TlsConfig::builder().root_certs(root_certs()).build())
                .build()
                .new_agent()
        })
    }

    pub(crate) fn open(&self, url: &str) -> Result<Download, AttemptFailure> {
        let response = self.agent().get(url).call().map_err(failure_of_ureq)?;
        match response.status().as_u16() {
            200 => {}
            404 | 410 => return Err(AttemptFailure::NotFound),
            code => return Err(AttemptFailure::Status(code)),
        }
        let body = response.into_body();
        Ok(Download {
            length: body.content_length(),
            body: Box::new(body.into_reader()),
        })
    }
}

/// The system's trust store, as curl and apt use it (sites behind a local CA
/// work); Mozilla's built-in roots only when the system has none.
fn root_certs() -> RootCerts {
    let native = rustls_native_certs::load_native_certs();
    let certs: Vec<Certificate<'static>> = native
        .certs
        .iter()
        .map(|der| Certificate::from_der(der).to_owned())
        .collect();
    if certs.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::Specific(Arc::new(certs))
    }
}

fn failure_of_ureq(error: ureq::Error) -> AttemptFailure {
    match error {
        ureq::Error::StatusCode(code) => AttemptFailure::Status(code),
        ureq::Error::Timeout(t) => AttemptFailure::Timeout(t.to_string()),
        ureq::Error::Io(e) => failure_of_io(e),
        other => AttemptFailure::Transport(other.to_string()),
    }
}

/// Errors while reading a body arrive as io::Error, possibly wrapping ureq's.
pub(crate) fn failure_of_io(error: io::Error) -> AttemptFailure {
    if !error
        .get_ref()
        .is_some_and(|inner| inner.is::<ureq::Error>())
    {
        return match error.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                AttemptFailure::Timeout(error.to_string())
            }
            _ => AttemptFailure::Transport(error.to_string()),
        };
    }
    match error
        .into_inner()
        .map(|inner| inner.downcast::<ureq::Error>())
    {
        Some(Ok(inner)) => failure_of_ureq(*inner),
        _ => AttemptFailure::Transport("transport error".into()),
    }
}
