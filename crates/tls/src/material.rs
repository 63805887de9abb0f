//! Certificates, keys and the CA, read from PEM files and re-read when the files change.
//!
//! Every TLS handshake asks [`ReloadingMaterial::current`], which compares the files' modification
//! times and sizes with what it loaded (a few `stat` calls) and reloads on a change. A failed
//! reload (a file caught half-written, say) keeps the previous material and logs a warning, so a
//! rotation never takes a service down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{SpiffeId, TlsError, crypto_provider, spiffe_id_of};

/// Where a party's TLS files are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The mesh CA: trust anchor for peers' certificates.
    pub ca: PathBuf,
    /// Our own certificate chain and key; `None` for a user client that connects without one.
    pub identity: Option<IdentityFiles>,
}

#[derive(Clone, Debug)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn with_identity(ca: impl Into<PathBuf>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            ca: ca.into(),
            identity: Some(IdentityFiles {
                cert: cert.into(),
                key: key.into(),
            }),
        }
    }

    pub fn ca_only(ca: impl Into<PathBuf>) -> Self {
        Self {
            ca: ca.into(),
            identity: None,
        }
    }

    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.ca.as_path()];
        if let Some(identity) = &self.identity {
            paths.push(&identity.cert);
            paths.push(&identity.key);
        }
        paths
    }
}

/// One consistent load of the files.
pub struct Loaded {
    /// Our certificate and key, when we have an identity.
    pub certified_key: Option<Arc<CertifiedKey>>,
    /// Our own SPIFFE id, read from our certificate.
    pub spiffe_id: Option<SpiffeId>,
    /// Verifies client certificates against the CA; clients without one are let through to be
    /// authenticated by token (internal RPCs are guarded separately by the peer allowlist).
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    /// Verifies server certificates against the CA.
    pub server_verifier: Arc<WebPkiServerVerifier>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("spiffe_id", &self.spiffe_id)
            .finish_non_exhaustive()
    }
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

/// TLS material that follows its files. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct ReloadingMaterial {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    state: RwLock<(Stamp, Arc<Loaded>)>,
}

impl ReloadingMaterial {
    /// Loads the files now; fails if they are missing or invalid.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let provider = crypto_provider();
        let stamp = stamp(&files);
        let loaded = load(&files, &provider)?;
        Ok(Arc::new(Self {
            files,
            provider,
            state: RwLock::new((stamp, Arc::new(loaded))),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// The material as the files are now, reloading them if they changed since the last load.
    pub fn current(&self) -> Arc<Loaded> {
        let now = stamp(&self.files);
        if let Ok(state) = self.state.read()
            && state.0 == now
        {
            return Arc::clone(&state.1);
        }
        let mut state = match self.state.write() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.0 != now {
            match load(&self.files, &self.provider) {
                Ok(loaded) => {
                    tracing::info!(ca = %self.files.ca.display(), "TLS material changed on disk; reloaded");
                    *state = (now, Arc::new(loaded));
                }
                Err(error) => {
                    // Keep serving with what we had; try again on the next handshake.
                    tracing::warn!(%error, "TLS material changed on disk but does not load; keeping the previous one");
                }
            }
        }
        Arc::clone(&state.1)
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    files
        .paths()
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

fn load(files: &TlsFiles, provider: &Arc<CryptoProvider>) -> Result<Loaded, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(&files.ca, "CA certificate")? {
        roots.add(cert)?;
    }
    let roots = Arc::new(roots);
    let client_verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(provider))
        .allow_unauthenticated()
        .build()?;
    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(provider)).build()?;

    let (certified_key, spiffe_id) = match &files.identity {
        Some(identity) => {
            let chain = read_certs(&identity.cert, "certificate")?;
            let key = PrivateKeyDer::from_pem_file(&identity.key).map_err(|source| TlsError::Read {
                what: "private key",
                path: identity.key.clone(),
                source,
            })?;
            let spiffe_id = chain.first().and_then(spiffe_id_of);
            let certified = CertifiedKey::from_der(chain, key, provider)?;
            (Some(Arc::new(certified)), spiffe_id)
        }
        None => (None, None),
    };
    Ok(Loaded {
        certified_key,
        spiffe_id,
        client_verifier,
        server_verifier,
    })
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}
