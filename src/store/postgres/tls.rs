//! TLS to PostgreSQL with rustls, as the URL's `sslmode` and `sslrootcert` ask for it
//! (`config::DatabaseTls`): the server's certificate is always verified, against the
//! given certificate authorities or the system's.

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls_platform_verifier::ConfigVerifierExt;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::DatabaseTls;
use crate::store::{StoreError, StoreResult};

/// What connections are made with; unused when `sslmode` says disable.
pub(super) fn connector(tls: &DatabaseTls) -> StoreResult<MakeRustlsConnect> {
    let config = match &tls.root_cert {
        None => ClientConfig::with_platform_verifier()
            .map_err(|e| StoreError(format!("store: cannot load the system's certificate authorities: {e}")))?,
        Some(path) => {
            let unreadable =
                |e: &dyn std::fmt::Display| StoreError(format!("store.url: sslrootcert {}: {e}", path.display()));
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                roots
                    .add(cert.map_err(|e| unreadable(&e))?)
                    .map_err(|e| unreadable(&e))?;
            }
            if roots.is_empty() {
                return Err(unreadable(&"holds no PEM certificate"));
            }
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}
