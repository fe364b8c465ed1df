//! How a client talks to Esper, as plain data: the HTTP version and the
//! TLS trust of one client profile (the module fills it from
//! `esper_http2`, `esper_ssl_verify` and `esper_ssl_trusted_certificate`).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// Which HTTP version the client speaks to Esper (`esper_http2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http2 {
    /// Over https, h2 and http/1.1 offered by ALPN and the server's choice
    /// used; over http, HTTP/1.1.
    Auto,
    /// HTTP/2 only: h2 by ALPN over https, prior knowledge over http.
    On,
    /// HTTP/1.1 only.
    Off,
}

/// How a location's HTTP client talks to Esper: `esper_http2`,
/// `esper_ssl_verify` and `esper_ssl_trusted_certificate`.
#[derive(Clone)]
pub struct ClientProfile {
    pub http2: Http2,
    pub verify: bool,
    pub ca_file: Option<String>,
    /// The file's certificates as read at configuration time, so workers
    /// never touch the file.
    pub ca_certs: Option<Certificates>,
}

/// The certificates of an `esper_ssl_trusted_certificate` file.
pub type Certificates = Arc<Vec<CertificateDer<'static>>>;
