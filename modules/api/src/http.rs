//! The one way stoke makes an HTTP client (IMDS, AWS APIs, report and phone-home URLs):
//! reqwest over rustls with the `ring` crypto provider. `ring` builds in a fraction of
//! `aws-lc`'s time and adds a fraction of its size to the binary; stoke needs only TLS 1.2/1.3
//! with the usual suites, which both provide.

use std::sync::Once;

/// A client builder with the crypto provider installed and no proxy taken from the
/// environment (a proxy, where wanted, is the endpoint the config names).
pub fn client_builder() -> reqwest::ClientBuilder {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Err only when a provider is already the process default: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder().no_proxy()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a provider reqwest panics when it builds a client; with `ring` installed it
    /// builds both kinds stoke uses: https with the system's roots, http without a CA store.
    #[test]
    fn builds_https_and_plain_http_clients() {
        client_builder().build().expect("https client");
        client_builder()
            .tls_certs_only([])
            .build()
            .expect("plain http client");
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    /// A real TLS handshake and certificate check on this provider, against a local server
    /// whose certificate a test CA signed (`testdata/tls`); the same client refuses it when
    /// the CA is not among its roots.
    #[tokio::test]
    async fn an_https_request_verifies_the_server_and_gets_its_answer() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let _ = client_builder(); // the provider, for the server too
        let chain =
            vec![CertificateDer::from_pem_slice(include_bytes!("testdata/tls/leaf.pem")).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("testdata/tls/leaf.key")).unwrap();
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let serve = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                // A refused handshake ends that connection only.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tls.read(&mut buf).await.unwrap();
                    assert!(n > 0, "request cut short");
                    request.extend_from_slice(&buf[..n]);
                }
                tls.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                )
                .await
                .unwrap();
                tls.shutdown().await.unwrap();
            }
        });

        let url = format!("https://localhost:{port}/");
        let ca = reqwest::Certificate::from_pem(include_bytes!("testdata/tls/ca.pem")).unwrap();
        let trusting = client_builder().tls_certs_only([ca]).build().unwrap();
        let answer = trusting.get(&url).send().await.expect("https GET");
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "hello");

        let other =
            reqwest::Certificate::from_pem(include_bytes!("testdata/tls/leaf.pem")).unwrap();
        let distrusting = client_builder().tls_certs_only([other]).build().unwrap();
        let refused = distrusting
            .get(&url)
            .send()
            .await
            .expect_err("an unknown issuer");
        assert!(
            format!("{refused:?}").contains("UnknownIssuer"),
            "{refused:?}"
        );
        serve.abort();
    }
}
