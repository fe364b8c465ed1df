//! The HTTP client of ngx_http_esper_module to Esper, with no nginx types:
//! one [`Origin`] per Esper base URL and client profile holds its HTTP/1.1
//! and HTTP/2 connections; [`exchange`] makes one call and reads its answer.
//! A call is sent again only when it is proven that Esper never processed
//! it (`retry`). Everything runs on one current-thread tokio runtime, the
//! worker's runtime thread; nothing here blocks it.

mod connect;
mod exchange;
mod h1;
mod h2;
mod origin;
mod profile;
mod resolve;
mod retry;
mod stream;
mod tls;
mod transport;

pub use connect::{Handshakes, HANDSHAKES};
pub use exchange::{exchange, Answer, Call, CallKind};
pub use origin::Origin;
pub use profile::{Certificates, ClientProfile, Http2};
pub use tls::client_config;
