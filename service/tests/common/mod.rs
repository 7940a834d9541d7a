//! The integration-test harness: each `TestApp` is the real app on its own PostgreSQL database and
//! Redis key prefix, listening on an ephemeral port, and dropped cleanly at the end of the test.

#![allow(dead_code)]

pub mod sandbox;

use std::path::PathBuf;
use std::sync::Arc;

use kyc_service::app::AppState;
use kyc_service::config::Settings;
use kyc_service::crypto;
use kyc_service::kyc::model::{NewKycRequest, RequestType};
use kyc_service::kyc::pii::{ChineseName, IdNumber, Phone};
use kyc_service::store::clients;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

pub const SEED_SECRET: &str = "your-secret-key-here-must-be-32-bytes-long";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn seed_config() -> PathBuf {
    repo_root().join("config.yaml")
}

/// The seed's config with `overrides`, as `KYC__…` pairs.
pub fn settings_with(overrides: &[(&str, String)]) -> Settings {
    Settings::load(
        &seed_config(),
        overrides.iter().map(|(k, v)| ((*k).to_owned(), v.clone())),
    )
    .expect("test settings load")
}

/// A fresh, empty database on the configured server, named for this test.
pub async fn create_database() -> String {
    let base = settings_with(&[]);
    let name = format!("kyc_test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect_with(&kyc_service::store::connect_options(
        &base.database,
        &base.database.dbname,
    ))
    .await
    .expect("the test PostgreSQL is reachable as kyc_user (run scripts/setup.sh)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("kyc_user may create databases");
    name
}

pub fn drop_database(name: String) {
    // Runs on its own thread and runtime so it works from Drop inside any runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let base = settings_with(&[]);
            if let Ok(mut admin) = PgConnection::connect_with(&kyc_service::store::connect_options(
                &base.database,
                &base.database.dbname,
            ))
            .await
            {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        });
    })
    .join()
    .expect("drop thread");
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    pub http: reqwest::Client,
    pub dbname: String,
    pub redis_prefix: String,
    /// Whether dropping this app drops its database (not when it shares another app's).
    owns_db: bool,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// The app with extra `KYC__…` overrides on top of the seed's config.
    pub async fn spawn_with(extra: &[(&str, String)]) -> Self {
        let dbname = create_database().await;
        let prefix = format!("kyc-test:{}:", Uuid::new_v4().simple());
        Self::spawn_on(dbname, prefix, true, extra).await
    }

    /// A second instance of the service on `other`'s database and Redis prefix, as two
    /// instances behind one gateway are. `other` keeps (and finally drops) the database.
    pub async fn spawn_sharing(other: &TestApp, extra: &[(&str, String)]) -> Self {
        Self::spawn_on(
            other.dbname.clone(),
            other.redis_prefix.clone(),
            false,
            extra,
        )
        .await
    }

    async fn spawn_on(
        dbname: String,
        redis_prefix: String,
        owns_db: bool,
        extra: &[(&str, String)],
    ) -> Self {
        let mut overrides: Vec<(&str, String)> = vec![
            ("KYC__DATABASE__DBNAME", dbname.clone()),
            ("KYC__DATABASE__MAX_IDLE_CONNS", "0".into()),
            ("KYC__REDIS__KEY_PREFIX", redis_prefix.clone()),
            ("KYC__REDIS__MIN_IDLE_CONNS", "1".into()),
        ];
        overrides.extend(extra.iter().cloned());
        let settings = settings_with(&overrides);
        let state = AppState::new(settings).expect("state builds");
        state.prepare().await.expect("database prepared");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serve_state = state.clone();
        let server = tokio::spawn(async move {
            kyc_service::serve(listener, serve_state, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        Self {
            addr,
            state,
            http: reqwest::Client::new(),
            dbname,
            redis_prefix,
            owns_db,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Creates a client with `scopes` and returns its secret.
    pub async fn create_client(&self, id: &str, scopes: &[&str]) -> String {
        let secret = format!("{id}-secret-{}", Uuid::new_v4().simple());
        let hash = crypto::hash_secret(&secret).expect("hash");
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        clients::create(&self.state.db, id, "test client", &hash, &scopes)
            .await
            .expect("client created");
        secret
    }

    /// `POST /api/v1/auth/token` with a JSON body, returning status and body.
    pub async fn token_json(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/api/v1/auth/token"))
            .json(&body)
            .send()
            .await
            .expect("token request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    /// An access token for `client_id` / `secret`, with its default scopes.
    pub async fn access_token(&self, client_id: &str, secret: &str) -> String {
        let (status, body) =
            self.token_json(serde_json::json!({"grant_type":"client_credentials","client_id":client_id,"client_secret":secret})).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.expect("request")
    }

    /// Records a finished `complete` request carrying the given PII, as the KYC flow will.
    pub async fn insert_request(
        &self,
        client_id: &str,
        name: &str,
        id_number: &str,
        phone: &str,
    ) -> Uuid {
        let id = Uuid::new_v4();
        let req = NewKycRequest {
            id,
            client_id: client_id.to_owned(),
            user_id: "user_123".to_owned(),
            request_type: RequestType::Complete,
            name: Some(ChineseName::parse(name).expect("name")),
            id_number: Some(IdNumber::parse(id_number).expect("id number")),
            phone: Some(Phone::parse(phone).expect("phone")),
            idempotency_key: Some("kyc-123456".into()),
        };
        self.state
            .requests
            .create(&req)
            .await
            .expect("request recorded");
        id
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.state.db
    }

    pub fn metrics(&self) -> Arc<kyc_service::metrics::Metrics> {
        self.state.metrics.clone()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if self.owns_db {
            drop_database(std::mem::take(&mut self.dbname));
        }
    }
}

/// Signs arbitrary claims with HS256 and `secret` (for forged or expired tokens).
pub fn sign_hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// Valid access-token claims for the seed's issuer and audience, shifted by `offset` seconds.
pub fn claims(sub: &str, scope: &str, offset: i64) -> Value {
    let now = chrono::Utc::now().timestamp() + offset;
    serde_json::json!({
        "iss": "kyc-service", "aud": "kyc-api", "sub": sub, "client_id": sub, "scope": scope,
        "iat": now, "nbf": now, "exp": now + 300, "jti": Uuid::new_v4().to_string(),
    })
}
